"""Illustrated Pose: COCO keypoints of each character, as POSE_KEYPOINT, an OpenPose control
image, COCO JSON, heatmaps and a preview."""

from __future__ import annotations

import json

import numpy as np
import torch

from illustpose.characters import BOX_FORMATS, MIN_AREA, boxes_per_image
from illustpose.datasets import coco_document
from illustpose.heatmaps import pose_heatmap
from illustpose.keypoints import ALL_KEYPOINTS, to_coco_annotation, to_pose_keypoint
from illustpose.render import draw_pose_results
from illustpose.pipeline import Pipeline
from illustpose.render import render_pose_keypoint
from illustpose.results import PoseResult

from ._api import BBOX, POSE_KEYPOINT, POSE_MODEL, io
from ._common import (
    box_segmenter_input,
    fit_mask,
    each_image,
    image_tensor,
    on_device,
    preview_input,
    preview_ui,
    reports_errors,
    resolution_input,
    to_output,
    xinsr_input,
)

ALL_JOINTS = "all"


def given_characters(batch: int, hw: tuple[int, int], bbox, bbox_format: str, character_mask) -> tuple:
    """``(boxes, masks)`` for :meth:`Pipeline.annotate`: per image the ``bbox`` input's boxes (every
    format of :func:`illustpose.characters.boxes_per_image`), else the ``character_mask`` input's
    masks (one per image, split into characters; or, for a single image, one per character),
    else ``(None, None)`` (the pipeline then segments)."""
    if bbox is not None:
        return boxes_per_image(bbox, batch, bbox_format), None
    if character_mask is not None:
        count = character_mask.shape[0] if character_mask.dim() == 3 else 1
        per_character = batch == 1 and count > 1
        masks = np.rint(fit_mask(character_mask, count if per_character else batch, hw).numpy() * 255.0)
        masks = list(masks.astype(np.uint8))
        return None, [masks] if per_character else masks
    return None, None


def coco_json(poses: list[tuple[PoseResult, ...] | None], hw: tuple[int, int], threshold: float) -> str:
    """A COCO keypoints document for the batch (images of size ``hw``): image ``i`` has id ``i + 1``
    and one annotation per character (ids 1, 2, ... over the batch), none when its poses are None
    (the image failed); absent joints ``v = 0``, joints scoring below ``threshold`` ``v = 1``."""
    found = [(i, p) for i, ps in enumerate(poses) for p in ps or ()]
    return json.dumps(coco_document(
        [{"id": i + 1, "height": hw[0], "width": hw[1]} for i in range(len(poses))],
        [to_coco_annotation(p.keypoints, p.scores, list(p.bbox_xywh), image_id=i + 1, ann_id=n,
                            visibility_threshold=threshold, present=p.present) for n, (i, p) in enumerate(found, 1)],
        description="poses estimated by illustpose's Illustrated Pose node"))


class IllustratedPose(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IllustratedPose|illustpose",
            display_name="Illustrated Pose (illustpose)",
            category="illustpose",
            description="Estimates the pose of each character in each illustration (reference pose_estimator.py, "
                        "run once per character): COCO keypoints as POSE_KEYPOINT and an OpenPose ControlNet "
                        "image, drawn exactly as comfyui_controlnet_aux draws them. Joints outside the image or "
                        "far from their character's mask are left out. The preview is also shown on the node.",
            inputs=[
                io.Image.Input("image", tooltip="Illustrations with one or more characters each, any size."),
                POSE_MODEL.Input("pose_model", tooltip="From Load Pose Estimator."),
                io.Float.Input("confidence_threshold", default=0.0, min=0.0, max=1.0, step=0.01, tooltip=(
                    "Joints whose score (the peak of their sigmoid heatmap before smoothing) is below this are "
                    "left out too (not drawn, confidence 0, COCO v=1). 0 = only the position rule; 0.15 removes "
                    "most phantom legs of bust shots but also about 1 joint in 6 of full-body figures.")),
                resolution_input(512, "the input size"),
                io.Boolean.Input("draw_extra", default=False, tooltip=(
                    "Also draw the model's 6 extra points (nose root, body, thumbs, toes) on the preview.")),
                io.Combo.Input("heatmap_joint", options=[ALL_JOINTS, *ALL_KEYPOINTS], default=ALL_JOINTS, tooltip=(
                    "Which heatmap the heatmaps output shows: one joint, or 'all' = the maximum over the "
                    "25 channels.")),
                xinsr_input(),
                box_segmenter_input("used when neither bbox nor character_mask is given; its mask is split into "
                                    "characters; without any of the three the whole image is one character"),
                io.Mask.Input("character_mask", optional=True, tooltip=(
                    "Character masks (1 = character): one per image, split into characters like the segmenter's "
                    "mask, or, for a single image, one per character. Replaces segmentation.")),
                BBOX.Input("bbox", optional=True, tooltip=(
                    "Character boxes, wins over the rest: [x, y, w, h] (Character Segment's bbox), several per "
                    "image as a list per image, Impact Pack SEGS, COCO annotations or Florence2 data; plain "
                    "lists follow bbox_format.")),
                io.Int.Input("characters", default=0, min=0, max=64, optional=True, tooltip=(
                    "Characters per image from a mask: 0 = auto (every character the split finds), 1 = the "
                    "reference's single box around the whole mask (the whole image when it is empty), N = at "
                    "most the N largest.")),
                io.Float.Input("min_area", default=MIN_AREA, min=0.0, max=1.0, step=0.01, optional=True, tooltip=(
                    "A character's least pixel area as a fraction of the largest's; smaller detached parts (a hat, "
                    "a weapon) join the nearest character.")),
                io.Combo.Input("bbox_format", options=list(BOX_FORMATS), default=BOX_FORMATS[0], optional=True,
                               tooltip=("How plain lists of 4 numbers in bbox are read: xywh = [x, y, w, h] (ours, "
                                        "KJNodes), xyxy = [x0, y0, x1, y1] (Florence2, SAM2, YOLO).")),
                preview_input("the preview output (each character's skeleton over its image)"),
            ],
            outputs=[
                POSE_KEYPOINT.Output(display_name="pose_keypoint", tooltip=(
                    "OpenPose-18 keypoints in pixels, one person per character, comfyui_controlnet_aux's format "
                    "(confidence 1 present, 0 absent).")),
                io.Image.Output(display_name="openpose_image",
                                tooltip="The OpenPose control image of all characters, for ControlNet."),
                io.String.Output(display_name="coco_json", tooltip=(
                    "COCO keypoints JSON (images, annotations, categories): one annotation per character with "
                    "scores and the 8 extra points; absent joints v=0.")),
                io.Mask.Output(display_name="heatmaps",
                               tooltip="The chosen heatmap (0..1) placed on the image, the maximum over characters."),
                io.Image.Output(display_name="preview",
                                tooltip="Each character's COCO skeleton and box drawn over the image."),
            ],
        )

    @classmethod
    @reports_errors
    def execute(cls, image, pose_model, confidence_threshold, resolution, draw_extra, heatmap_joint,
                xinsr_stick_scaling, segmenter=None, character_mask=None, bbox=None, characters=0,
                min_area=MIN_AREA, bbox_format=BOX_FORMATS[0], show_preview=True):
        batch, hw = image.shape[0], tuple(image.shape[1:3])
        boxes, masks = given_characters(batch, hw, bbox, bbox_format, character_mask)
        pipeline = Pipeline(segmenter if boxes is None and masks is None else None, None, pose_model,
                            characters=characters or "auto", min_area=min_area)
        empty = []

        def estimate(im, i: int) -> tuple[tuple[PoseResult, ...], np.ndarray]:
            poses = pipeline.annotate([im], None if boxes is None else [boxes[i]],
                                      masks=None if masks is None else [masks[i]], return_heatmaps=True)[0].poses
            if not poses:
                empty.append(f"Illustrated Pose: image {i} (0-based) of {batch}: no character found (empty mask or no "
                             "box); set characters to 1 to pose the whole image")
            return poses, draw_pose_results(np.asarray(im.convert("RGB")), poses, confidence_threshold, draw_extra)

        with on_device(pipeline.segmenter, pose_model):
            results, messages = each_image(estimate, image, node="Illustrated Pose")
        # an image that failed: nobody in its frame, no annotation, blank heatmap and preview
        poses = [None if r is None else r[0] for r in results]
        people = [[p.openpose(confidence_threshold) for p in ps or ()] for ps in poses]
        pose_keypoint = to_pose_keypoint(people, [hw] * batch)
        control = render_pose_keypoint(pose_keypoint, resolution or None, xinsr_stick_scaling=xinsr_stick_scaling)
        previews = image_tensor([np.zeros((*hw, 3), np.uint8) if r is None else r[1] for r in results])
        joint = None if heatmap_joint == ALL_JOINTS else heatmap_joint
        heatmaps = torch.from_numpy(np.stack([np.max([pose_heatmap(p, joint) for p in ps], axis=0) if ps
                                              else np.zeros(hw, np.float32) for ps in poses]))
        shown = {**preview_ui(previews, cls, show_preview), "openpose_json": [json.dumps(pose_keypoint)]}
        if messages or empty:
            shown["text"] = messages + empty
        return io.NodeOutput(pose_keypoint, image_tensor(control), coco_json(poses, hw, confidence_threshold),
                             to_output(heatmaps), previews, ui=shown)


NODES = [IllustratedPose]
