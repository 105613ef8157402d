"""Files in ComfyUI's output and input folders: pose keypoints (POSE_KEYPOINT and COCO JSON) and
captions (one ``.txt`` per image, the LoRA-training convention)."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

import folder_paths
import numpy as np
from PIL import Image

from illustpose.captions import caption_line
from illustpose.datasets import merge_coco, write_coco
from illustpose.errors import DatasetError
from illustpose.fileio import write_text
from illustpose.images import save_png
from illustpose.keypoints import coco_to_pose_keypoint, parse_pose_keypoint

from ._api import POSE_KEYPOINT, io
from ._common import IllustposeNodeError, reports_errors

OUTPUT_TAG = " [output]"  # ComfyUI's annotation for a file of the output folder


def output_stems(filename_prefix: str, count: int, filenames: list[str] | None, width: int = 0,
                 height: int = 0) -> list[Path]:
    """Paths without suffix for ``count`` items under the output folder.

    Without ``filenames`` items are named as SaveImage names them, ``<prefix>_00001_``,
    ``<prefix>_00002_``... (so a SaveImage with the same prefix never reuses a number).  With
    ``filenames`` (e.g. from Load Image Folder) the prefix is a folder and each item keeps its
    file's relative path and stem inside it (``<prefix>/sub/img01``).
    """
    if filenames and len(filenames) != count:
        raise IllustposeNodeError(f"filenames holds {len(filenames)} names for {count} items; connect the "
                                  "filenames of the same images (Load Image Folder's)")
    prefix = os.path.join(filename_prefix, "_") if filenames else filename_prefix  # "_": ComfyUI checks the folder
    folder, name, counter, _, _ = folder_paths.get_save_image_path(
        prefix, folder_paths.get_output_directory(), width, height)
    if not filenames:
        return [Path(folder) / f"{name}_{counter + i:05}_" for i in range(count)]
    stems = []
    for f in filenames:
        rel = PurePosixPath(str(f).replace("\\", "/"))
        if rel.is_absolute() or ".." in rel.parts:
            rel = PurePosixPath(rel.name)  # never write outside the prefix's folder
        stems.append(Path(folder, *rel.with_suffix("").parts))
    return stems


def _frames(value) -> list:
    """The frame dicts of one POSE_KEYPOINT value (list, dict or JSON), validated."""
    value = json.loads(value) if isinstance(value, str) else value
    frames = [value] if isinstance(value, dict) else list(value)
    parse_pose_keypoint(frames)  # PoseFormatError names the frame and the problem
    return frames


def _coco(texts: list[str]) -> dict:
    """The COCO keypoints JSON texts of every run, merged (ids renumbered from 1)."""
    try:
        return merge_coco([json.loads(t) for t in texts])
    except (json.JSONDecodeError, DatasetError) as e:
        raise IllustposeNodeError(f"coco_json is not a COCO keypoints file ({e}); connect Illustrated Pose's "
                                  "coco_json") from None


def _json_files(root: str) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*.json") if p.is_file())


class SavePoseKeypoints(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SavePoseKeypoints|illustpose",
            display_name="Save Pose Keypoints (illustpose)",
            category="illustpose/pose",
            description="Writes poses to ComfyUI's output folder: POSE_KEYPOINT JSON (.json, readable by "
                        "comfyui_controlnet_aux tools and Load Pose Keypoints) and COCO keypoints (.coco.json).",
            is_input_list=True,
            is_output_node=True,
            inputs=[
                POSE_KEYPOINT.Input("pose_keypoint",
                                    tooltip="Poses to save (all frames of every run of the upstream node)."),
                io.String.Input("filename_prefix", default="illustpose/pose", tooltip=(
                    "File name prefix under the output folder, may contain subfolders; the folder itself when "
                    "per_image and filenames are used.")),
                io.Boolean.Input("per_image", default=False, tooltip=(
                    "One file per image (named after filenames when connected) instead of one file for all.")),
                io.String.Input("coco_json", optional=True, force_input=True,
                                tooltip="Illustrated Pose's coco_json, to also write a COCO keypoints file."),
                io.String.Input("filenames", optional=True, force_input=True, tooltip=(
                    "The images' file names (Load Image Folder's): COCO file_name, and per-image file names.")),
            ],
            outputs=[],
        )

    @classmethod
    @reports_errors
    def execute(cls, pose_keypoint, filename_prefix, per_image, coco_json=None, filenames=None):
        frames = [f for value in pose_keypoint for f in _frames(value)]
        coco = _coco(coco_json) if coco_json else None
        for what, items in (("coco_json", coco["images"] if coco else None), ("filenames", filenames)):
            if items and len(items) != len(frames):
                raise IllustposeNodeError(f"{what} holds {len(items)} images but pose_keypoint {len(frames)} frames; "
                                          "connect outputs that come from the same images")
        if coco and filenames:
            for im, name in zip(coco["images"], filenames):
                im["file_name"] = name
        if per_image[0]:
            stems, groups = output_stems(filename_prefix[0], len(frames), filenames), [[i] for i in range(len(frames))]
        else:
            stems, groups = output_stems(filename_prefix[0], 1, None), [list(range(len(frames)))]
        written = []
        for stem, idx in zip(stems, groups):
            written.append(write_text(stem.with_name(stem.name + ".json"),
                                      json.dumps([frames[i] for i in idx], indent=1)))
            if coco:
                ids = {coco["images"][i]["id"] for i in idx}
                written.append(write_coco(stem.with_name(stem.name + ".coco.json"), [coco["images"][i] for i in idx],
                                          [a for a in coco["annotations"] if a["image_id"] in ids],
                                          description=coco["info"]["description"]))
        out = folder_paths.get_output_directory()
        return io.NodeOutput(ui={"text": [os.path.relpath(p, out) for p in written]})


class LoadPoseKeypoints(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LoadPoseKeypoints|illustpose",
            display_name="Load Pose Keypoints (illustpose)",
            category="illustpose/pose",
            description="Reads a POSE_KEYPOINT JSON (ours, DWPose's or cn_aux's Save Pose Keypoints) or a COCO "
                        "keypoints file from ComfyUI's input or output folder.",
            inputs=[io.Combo.Input("file", options=_json_files(folder_paths.get_input_directory()) + [
                f + OUTPUT_TAG for f in _json_files(folder_paths.get_output_directory())], tooltip=(
                "A .json file in the input folder, or in the output folder (marked [output]); COCO files "
                "become one frame per image with their v=2 joints."))],
            outputs=[POSE_KEYPOINT.Output(display_name="pose_keypoint",
                                          tooltip="The poses, for Render OpenPose or any POSE_KEYPOINT node.")],
        )

    @classmethod
    def fingerprint_inputs(cls, file):
        path = folder_paths.get_annotated_filepath(file)
        return os.stat(path).st_mtime_ns if os.path.isfile(path) else float("nan")

    @classmethod
    @reports_errors
    def execute(cls, file):
        path = folder_paths.get_annotated_filepath(file)
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IllustposeNodeError(f"{path}: cannot read it as JSON ({e})") from None
        is_coco = isinstance(data, dict) and "annotations" in data
        return io.NodeOutput(coco_to_pose_keypoint(data) if is_coco else _frames(data))


class SaveCaptions(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SaveCaptions|illustpose",
            display_name="Save Captions (illustpose)",
            category="illustpose/dataset",
            description="Writes one caption .txt per image to the output folder, with the same stem as the "
                        "image (the LoRA-training layout); can save the images beside them.",
            is_input_list=True,
            is_output_node=True,
            inputs=[
                io.String.Input("tags", force_input=True, tooltip="One caption per image (Danbooru Tag's tags)."),
                io.String.Input("filename_prefix", default="illustpose/dataset", tooltip=(
                    "File name prefix under the output folder, may contain subfolders; the folder itself when "
                    "filenames is connected.")),
                io.String.Input("caption_prefix", default="", tooltip=(
                    "Text put first in every caption, e.g. a trigger word; joined to the tags with ', '.")),
                io.Boolean.Input("replace_underscores", default=True,
                                 tooltip="Write 'long hair' instead of 'long_hair'."),
                io.Image.Input("images", optional=True,
                               tooltip="The captioned images, saved as PNG beside their captions."),
                io.String.Input("filenames", optional=True, force_input=True, tooltip=(
                    "The images' file names (Load Image Folder's): captions keep their stems and subfolders.")),
            ],
            outputs=[],
        )

    @classmethod
    @reports_errors
    def execute(cls, tags, filename_prefix, caption_prefix, replace_underscores, images=None, filenames=None):
        pixels = [im for batch in images for im in batch] if images else None
        if pixels is not None and len(pixels) != len(tags):
            raise IllustposeNodeError(
                f"{len(tags)} captions for {len(pixels)} images; connect the images that were tagged")
        h, w = pixels[0].shape[:2] if pixels else (0, 0)
        stems = output_stems(filename_prefix[0], len(tags), filenames, w, h)
        out = folder_paths.get_output_directory()
        saved = []
        for i, (stem, text) in enumerate(zip(stems, tags)):
            text = text.replace("_", " ") if replace_underscores[0] else text
            write_text(stem.with_name(stem.name + ".txt"), caption_line(caption_prefix[0], text))
            if pixels is not None:
                # SaveImage's rule for floats to bytes
                img = Image.fromarray(np.clip(255.0 * pixels[i].cpu().numpy(), 0, 255).astype(np.uint8))
                png = save_png(stem.with_name(stem.name + ".png"), img, compress_level=4)
                subfolder = os.path.relpath(png.parent, out)
                saved.append({"filename": png.name, "subfolder": "" if subfolder == "." else subfolder,
                              "type": "output"})
        ui = {"text": [os.path.relpath(s, out) + ".txt" for s in stems]}
        return io.NodeOutput(ui={**ui, "images": saved} if saved else ui)


NODES = [SavePoseKeypoints, LoadPoseKeypoints, SaveCaptions]
