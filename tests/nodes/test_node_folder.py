"""Load Image Folder: every image of a folder as a list, whatever its size and mode."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

NODE = "LoadImageFolder|illustpose"


@pytest.fixture
def folder(comfy_base):
    """A folder under ComfyUI's input folder with images of several sizes and modes."""
    root = comfy_base / "input" / f"set_{uuid.uuid4().hex[:8]}"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(root / "a_rgb.png")
    rgba = rng.integers(0, 256, (16, 12, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "b_rgba.png")
    Image.fromarray(rng.integers(0, 256, (9, 7), dtype=np.uint8), "L").save(root / "sub" / "c_grey.png")
    Image.fromarray(rng.integers(0, 65536, (5, 6), dtype=np.uint16)).save(root / "sub" / "d_16bit.png")
    (root / "notes.txt").write_text("not an image")
    return root, rgba


def load(pack, folder, recursive=True, start=0, limit=0):
    (images, masks, names), ui = pack.run(NODE, folder=folder, recursive=recursive, start_index=start, max_images=limit)
    assert ui is None
    return images, masks, names


def test_images_of_any_size_and_mode_load_as_a_list(pack, folder):
    root, rgba = folder
    images, masks, names = load(pack, root.name)
    assert names == ["a_rgb.png", "b_rgba.png", "sub/c_grey.png", "sub/d_16bit.png"]
    assert [tuple(i.shape) for i in images] == [(1, 20, 30, 3), (1, 16, 12, 3), (1, 9, 7, 3), (1, 5, 6, 3)]
    assert [tuple(m.shape) for m in masks] == [(1, 20, 30), (1, 16, 12), (1, 9, 7), (1, 5, 6)]
    assert torch.equal(images[1][0], torch.from_numpy(rgba[..., :3]).float() / 255)
    assert torch.equal(masks[1][0], 1.0 - torch.from_numpy(rgba[..., 3]).float() / 255)  # LoadImage's MASK
    assert masks[0].max() == 0 and torch.equal(images[2][0, ..., 0], images[2][0, ..., 2])
    assert ("progress", 4) in pack.calls


def test_recursion_start_and_limit(pack, folder):
    root, _ = folder
    assert load(pack, root.name, recursive=False)[2] == ["a_rgb.png", "b_rgba.png"]
    assert load(pack, str(root), start=1, limit=2)[2] == ["b_rgba.png", "sub/c_grey.png"]  # absolute path too


def test_the_fingerprint_follows_the_files(pack, folder):
    root, _ = folder
    node = pack.node(NODE)
    before = node.fingerprint_inputs(folder=root.name, recursive=True, start_index=0, max_images=0)
    os.utime(root / "a_rgb.png", ns=(0, 10**9))
    assert node.fingerprint_inputs(folder=root.name, recursive=True, start_index=0, max_images=0) != before
    missing = node.fingerprint_inputs(folder="nowhere", recursive=True, start_index=0, max_images=0)
    assert missing != missing  # NaN: always run, so execute reports the problem


def test_empty_or_missing_folders_are_clear_errors(pack, folder):
    root, _ = folder
    with pytest.raises(pack.node_error, match=r"no images in .* \(from index 9\)"):
        load(pack, root.name, start=9)
    with pytest.raises(pack.node_error, match="no such file or folder"):
        load(pack, "nowhere")
