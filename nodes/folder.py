"""Load Image Folder: every image of a folder, for annotating an existing collection."""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths
import numpy as np
import torch

from illustpose.errors import IllustposeError
from illustpose.images import IMAGE_EXTENSIONS, iter_image_files, load_image

from ._api import io
from ._common import IllustposeNodeError, map_with_progress, reports_errors, to_output


def image_files(folder: str, recursive: bool, start_index: int, max_images: int) -> tuple[Path, list[Path]]:
    """The folder (relative paths are under ComfyUI's input folder) and its image files in sorted
    order, from ``start_index``, at most ``max_images`` (0 = all)."""
    root = Path(folder_paths.get_input_directory()) / Path(folder.strip()).expanduser()  # absolute paths win
    files = list(iter_image_files([root], recursive=recursive))  # ImageError if the folder is missing
    return root, files[start_index:start_index + max_images if max_images else None]


def load_tensors(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One file -> IMAGE ``[1, H, W, 3]`` and MASK ``[1, H, W]`` as LoadImage gives them (MASK =
    1 - alpha; zeros without alpha), through the library's reader (EXIF rotation, 16-bit, palettes)."""
    im = load_image(path)
    rgba = torch.from_numpy(np.array(im.convert("RGBA"))).float() / 255.0
    return to_output(rgba[None, ..., :3]), to_output(1.0 - rgba[None, ..., 3])


class LoadImageFolder(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LoadImageFolder|illustpose",
            display_name="Load Image Folder (illustpose)",
            category="illustpose/dataset",
            description="Loads every image of a folder as a list (any mix of sizes): the nodes after it run once "
                        "per image, and filenames names each one for Save Captions and Save Pose Keypoints.",
            inputs=[
                io.String.Input("folder", default="", placeholder="folder in ComfyUI/input, or an absolute path",
                                tooltip="The folder to read: a path relative to ComfyUI's input folder, or absolute."),
                io.Boolean.Input("recursive", default=True, tooltip="Also read the images in its subfolders."),
                io.Int.Input("start_index", default=0, min=0, max=1_000_000,
                             tooltip="Skip this many images (sorted by path), to process a large folder in parts."),
                io.Int.Input("max_images", default=0, min=0, max=1_000_000,
                             tooltip="Load at most this many (0 = all)."),
            ],
            outputs=[
                io.Image.Output(display_name="images", is_output_list=True,
                                tooltip="One image per file, at its own size."),
                io.Mask.Output(display_name="masks", is_output_list=True,
                               tooltip="Each image's transparency as Load Image gives it (1 = transparent)."),
                io.String.Output(display_name="filenames", is_output_list=True,
                                 tooltip="Each file's path relative to the folder, e.g. 'sub/img01.png'."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, folder, recursive, start_index, max_images):
        try:
            _, files = image_files(folder, recursive, start_index, max_images)
        except (IllustposeError, OSError):  # execute reports it
            return float("nan")
        return [(str(f), os.stat(f).st_mtime_ns) for f in files]

    @classmethod
    @reports_errors
    def execute(cls, folder, recursive, start_index, max_images):
        root, files = image_files(folder, recursive, start_index, max_images)
        if not files:
            raise IllustposeNodeError(f"no images in {root} (from index {start_index}); looked for "
                                      f"{', '.join(IMAGE_EXTENSIONS)} files")
        loaded = map_with_progress(load_tensors, files)
        names = [f.relative_to(root).as_posix() if f != root else f.name for f in files]
        return io.NodeOutput([im for im, _ in loaded], [m for _, m in loaded], names)


NODES = [LoadImageFolder]
