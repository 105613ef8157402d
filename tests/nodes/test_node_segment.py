"""Character Segment: the library's mask and bbox, per image, for every IMAGE layout ComfyUI makes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from illustpose.geometry import bbox_from_mask, bbox_rc_to_xywh
from illustpose.images import from_array

NODE = "CharacterSegment|illustpose"


def segment(pack, image, threshold=0.5, background="white", **kw):
    out, ui = pack.run(NODE, image=image, segmenter=pack.load("segmenter"), threshold=threshold,
                       cutout_background=background, **kw)
    assert ui is None
    return out


@pytest.mark.parametrize("batch", [1, 4])
def test_outputs_match_the_library_per_image(pack, batch):
    image = torch.rand(batch, 24, 32, 3, generator=torch.Generator().manual_seed(batch))
    mask, binary, cutout, bbox, bbox_json = segment(pack, image)
    assert mask.shape == binary.shape == (batch, 24, 32) and cutout.shape == (batch, 24, 32, 3)
    assert mask.dtype == binary.dtype == cutout.dtype == torch.float32
    ref = pack.load("segmenter").segment([from_array(im.numpy()) for im in image])
    for i, r in enumerate(ref):
        assert torch.equal(mask[i], torch.from_numpy(r.mask).float() / 255)
        assert bbox[i] == list(r.bbox_xywh)  # threshold 0.5: the reference's own bbox
    assert json.loads(bbox_json) == bbox
    assert ("progress", batch) in pack.calls
    assert pack.calls[0] == ("load_models_gpu", ("CharacterSegmenterNet",), 1 << 30, True)  # ComfyUI loads it


def test_threshold_drives_the_binary_mask_and_the_bbox(pack):
    image = torch.rand(2, 24, 32, 3, generator=torch.Generator().manual_seed(3))
    mask, binary, _, bbox, _ = segment(pack, image, threshold=0.8)
    for i in range(2):
        u8 = np.rint(mask[i].numpy() * 255).astype(np.uint8)
        assert torch.equal(binary[i], torch.from_numpy(u8 / 255.0 > 0.8).float())
        assert bbox[i] == bbox_rc_to_xywh(bbox_from_mask(u8, 0.8))


def test_rgba_image_equals_rgb_plus_transparency_mask(pack):
    g = torch.Generator().manual_seed(5)
    rgb, alpha = torch.rand(1, 24, 32, 3, generator=g), (torch.rand(1, 24, 32, generator=g) > 0.5).float()
    from_rgba = segment(pack, torch.cat([rgb, alpha[..., None]], dim=-1))
    from_mask = segment(pack, rgb, transparency=1.0 - alpha)  # LoadImage's MASK is 1 - alpha
    for a, b in zip(from_rgba, from_mask):
        assert torch.equal(a, b) if torch.is_tensor(a) else a == b
    ref = pack.load("segmenter").segment([from_array(rgb[0].numpy(), alpha[0].numpy())])[0]
    assert torch.equal(from_mask[0][0], torch.from_numpy(ref.mask).float() / 255)


def test_load_image_mask_of_an_opaque_image_changes_nothing(pack):
    image = torch.rand(1, 24, 32, 3, generator=torch.Generator().manual_seed(6))
    plain = segment(pack, image)
    with_mask = segment(pack, image, transparency=torch.zeros(1, 64, 64))  # LoadImage without alpha
    assert torch.equal(plain[0], with_mask[0]) and plain[3] == with_mask[3]


def test_grayscale_image_equals_its_rgb_expansion(pack):
    grey = torch.rand(1, 24, 32, 1, generator=torch.Generator().manual_seed(7))
    a, b = segment(pack, grey), segment(pack, grey.expand(-1, -1, -1, 3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])


@pytest.mark.parametrize("background", ["white", "black", "transparent"])
def test_cutout_composites_the_character_over_the_background(pack, background):
    image = torch.rand(1, 24, 32, 3, generator=torch.Generator().manual_seed(8))
    mask, _, cutout, _, _ = segment(pack, image, background=background)
    a = mask[..., None]
    if background == "transparent":
        assert cutout.shape == (1, 24, 32, 4)
        assert torch.equal(cutout[..., :3], image) and torch.equal(cutout[..., 3], mask)
    else:
        fill = 1.0 if background == "white" else 0.0
        assert torch.allclose(cutout, image * a + (1 - a) * fill)


def test_a_single_mask_serves_a_whole_batch(pack):
    image = torch.rand(2, 24, 32, 3, generator=torch.Generator().manual_seed(9))
    alpha = torch.ones(24, 32)
    alpha[:, :10] = 0.0
    out = segment(pack, image, transparency=(1.0 - alpha))  # a [H, W] mask: ComfyUI sometimes drops the batch axis
    ref = segment(pack, torch.cat([image, alpha.expand(2, 24, 32)[..., None]], dim=-1))
    assert torch.equal(out[0], ref[0])


def test_a_wrong_image_layout_is_a_clear_error(pack):
    with pytest.raises(pack.node_error, match=r"expected an IMAGE tensor \[batch, height, width"):
        segment(pack, torch.rand(3, 24, 32))
