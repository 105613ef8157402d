"""Illustrated Pose: COCO keypoints of the character, as POSE_KEYPOINT, an OpenPose control
image, COCO JSON, heatmaps and a preview."""

from __future__ import annotations

import json
from numbers import Real

import numpy as np
import torch

from illustpose.datasets import coco_document
from illustpose.geometry import bbox_from_mask, bbox_rc_to_xywh
from illustpose.heatmaps import pose_heatmap
from illustpose.keypoints import ALL_KEYPOINTS, to_coco_annotation, to_pose_keypoint
from illustpose.pipeline import Pipeline
from illustpose.render import draw_skeleton, render_pose_keypoint
from illustpose.results import PoseResult

from ._api import BBOX, POSE_KEYPOINT, POSE_MODEL, io
from ._common import (
    IllustposeNodeError,
    box_segmenter_input,
    fit_mask,
    each_image,
    image_tensor,
    on_device,
    reports_errors,
    resolution_input,
    to_output,
    xinsr_input,
)

ALL_JOINTS = "all"


def given_bboxes(batch: int, hw: tuple[int, int], bbox, character_mask) -> list | None:
    """One COCO box per image from the ``bbox`` input (one box, or one per image), else from
    ``character_mask`` (by the segmenter's bbox rule at 0.5), else None (the pipeline then segments)."""
    if bbox is not None:
        boxes = [bbox] if len(bbox) == 4 and all(isinstance(v, Real) for v in bbox) else list(bbox)
        if len(boxes) not in (1, batch):
            raise IllustposeNodeError(
                f"bbox holds {len(boxes)} boxes for {batch} images; give one per image, or one for all")
        return [list(b) for b in boxes] * (batch // len(boxes))
    if character_mask is not None:
        masks = np.rint(fit_mask(character_mask, batch, hw).numpy() * 255.0).astype(np.uint8)
        return [bbox_rc_to_xywh(bbox_from_mask(m, 0.5)) for m in masks]
    return None


def coco_json(poses: list[PoseResult | None], hw: tuple[int, int], threshold: float) -> str:
    """A COCO keypoints document for the batch (images of size ``hw``): image ``i`` has id ``i + 1``
    and one annotation, none when its pose is None (the image failed)."""
    return json.dumps(coco_document(
        [{"id": i + 1, "height": hw[0], "width": hw[1]} for i in range(len(poses))],
        [to_coco_annotation(p.keypoints, p.scores, list(p.bbox_xywh), image_id=i + 1, ann_id=i + 1,
                            visibility_threshold=threshold) for i, p in enumerate(poses) if p is not None],
        description="poses estimated by illustpose's Illustrated Pose node"))


class IllustratedPose(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IllustratedPose|illustpose",
            display_name="Illustrated Pose (illustpose)",
            category="illustpose",
            description="Estimates the pose of the one character in each illustration (reference pose_estimator.py): "
                        "COCO keypoints as POSE_KEYPOINT and an OpenPose ControlNet image, drawn exactly as "
                        "comfyui_controlnet_aux draws them.",
            inputs=[
                io.Image.Input("image", tooltip="Illustrations with one full-body character each, any size."),
                POSE_MODEL.Input("pose_model", tooltip="From Load Pose Estimator."),
                io.Float.Input("confidence_threshold", default=0.0, min=0.0, max=1.0, step=0.01, tooltip=(
                    "Joints whose heatmap peak is below this count as absent (not drawn, confidence 0, COCO v=1). "
                    "0 keeps every joint, as the reference.")),
                resolution_input(512, "the input size"),
                io.Boolean.Input("draw_extra", default=False, tooltip=(
                    "Also draw the model's 6 extra points (nose root, body, thumbs, toes) on the preview.")),
                io.Combo.Input("heatmap_joint", options=[ALL_JOINTS, *ALL_KEYPOINTS], default=ALL_JOINTS, tooltip=(
                    "Which heatmap the heatmaps output shows: one joint, or 'all' = the maximum over the "
                    "25 channels.")),
                xinsr_input(),
                box_segmenter_input("used when neither bbox nor character_mask is given; without any of the three "
                                    "the whole image is the box"),
                io.Mask.Input("character_mask", optional=True, tooltip=(
                    "The character's mask (1 = character, e.g. Character Segment's mask); its box replaces "
                    "segmentation.")),
                BBOX.Input("bbox", optional=True, tooltip=(
                    "The character's box [x, y, w, h] per image (e.g. Character Segment's bbox); wins over "
                    "the rest.")),
            ],
            outputs=[
                POSE_KEYPOINT.Output(display_name="pose_keypoint", tooltip=(
                    "OpenPose-18 keypoints in pixels, comfyui_controlnet_aux's format (confidence 1 present, "
                    "0 absent).")),
                io.Image.Output(display_name="openpose_image", tooltip="The OpenPose control image for ControlNet."),
                io.String.Output(display_name="coco_json", tooltip=(
                    "COCO keypoints JSON (images, annotations, categories) with scores and the 8 extra points.")),
                io.Mask.Output(display_name="heatmaps", tooltip="The chosen heatmap (0..1) placed on the image."),
                io.Image.Output(display_name="preview", tooltip="The COCO skeleton and box drawn over the image."),
            ],
        )

    @classmethod
    @reports_errors
    def execute(cls, image, pose_model, confidence_threshold, resolution, draw_extra, heatmap_joint,
                xinsr_stick_scaling, segmenter=None, character_mask=None, bbox=None):
        batch, hw = image.shape[0], tuple(image.shape[1:3])
        boxes = given_bboxes(batch, hw, bbox, character_mask)
        pipeline = Pipeline(segmenter if boxes is None else None, None, pose_model)

        def estimate(im, i: int) -> tuple[PoseResult, np.ndarray]:
            box = None if boxes is None else [boxes[i]]
            p = pipeline.annotate([im], box, return_heatmaps=True)[0].pose
            return p, draw_skeleton(np.asarray(im.convert("RGB")), p.keypoints, p.scores, bbox_xywh=list(p.bbox_xywh),
                                    threshold=confidence_threshold, draw_extra=draw_extra)

        with on_device(pipeline.segmenter, pose_model):
            results, messages = each_image(estimate, image, node="Illustrated Pose")
        # an image that failed: nobody in its frame, no annotation, blank heatmap and preview
        poses = [None if r is None else r[0] for r in results]
        people = [[] if p is None else [p.openpose(confidence_threshold)] for p in poses]
        pose_keypoint = to_pose_keypoint(people, [hw] * batch)
        control = render_pose_keypoint(pose_keypoint, resolution or None, xinsr_stick_scaling=xinsr_stick_scaling)
        previews = [np.zeros((*hw, 3), np.uint8) if r is None else r[1] for r in results]
        joint = None if heatmap_joint == ALL_JOINTS else heatmap_joint
        heatmaps = torch.from_numpy(np.stack([np.zeros(hw, np.float32) if p is None else pose_heatmap(p, joint)
                                              for p in poses]))
        ui = {"openpose_json": [json.dumps(pose_keypoint)]}
        if messages:
            ui["text"] = messages
        return io.NodeOutput(pose_keypoint, image_tensor(control), coco_json(poses, hw, confidence_threshold),
                             to_output(heatmaps), image_tensor(previews), ui=ui)


NODES = [IllustratedPose]
