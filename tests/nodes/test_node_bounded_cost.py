"""Segment, Tag and Pose nodes: an image that cannot be processed gets an empty result and a message
naming its batch index; the others are processed; extreme sizes give results, huge ones a message."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest
import torch

from illustpose.errors import ImageError
from illustpose.images import from_array

H, W = 24, 32


def batch_with_a_black_image(seed: int = 0) -> torch.Tensor:
    image = torch.rand(3, H, W, 3, generator=torch.Generator().manual_seed(seed))
    image[1] = 0.0
    return image


def refusing_black_images(monkeypatch, detector, method: str):
    """The (cached, shared) detector, whose ``method`` raises ImageError for an all-black image
    until the test ends (a stand-in for any image the models cannot process)."""
    real = getattr(detector, method)

    def guarded(images, *args, **kwargs):
        if any(np.asarray(im).max() == 0 for im in images):
            raise ImageError("cannot process this image")
        return real(images, *args, **kwargs)

    monkeypatch.setattr(detector, method, guarded)
    return detector


def tag(pack, image, tagger=None):
    return pack.run("DanbooruTag|illustpose", image=image, tagger=tagger or pack.load("tagger"), threshold=0.0,
                    exclude_tags="", replace_underscores=True, sort_by_score=True, max_tags=0)


def segment(pack, image, segmenter=None):
    return pack.run("CharacterSegment|illustpose", image=image, segmenter=segmenter or pack.load("segmenter"),
                    threshold=0.5, cutout_background="white")


def pose(pack, image, **kw):
    return pack.run("IllustratedPose|illustpose", image=image, pose_model=pack.load("pose"), confidence_threshold=0.0,
                    resolution=0, draw_extra=False, heatmap_joint="all", xinsr_stick_scaling=False, **kw)


def test_tag_gives_a_failed_image_an_empty_caption_and_tags_the_rest(pack, caplog, monkeypatch):
    image = batch_with_a_black_image()
    with caplog.at_level(logging.WARNING):
        (captions, scores_json), ui = tag(pack, image, refusing_black_images(monkeypatch, pack.load("tagger"), "tag"))
    assert captions[1] == "" and json.loads(scores_json)[1] == {}
    message = "Danbooru Tag: image 1 (0-based) of 3 left empty: cannot process this image"
    assert ui["text"][1] == message and message in caplog.text
    ref = pack.load("tagger").tag([from_array(image[i].numpy()) for i in (0, 2)])
    for caption, r in zip((captions[0], captions[2]), ref):
        assert caption.split(", ") == [n.replace("_", " ") for n, _ in r.above(0.0)] and ui["text"][0] == captions[0]


def test_segment_gives_a_failed_image_an_empty_mask_and_segments_the_rest(pack, monkeypatch):
    image = batch_with_a_black_image(1)
    segmenter = refusing_black_images(monkeypatch, pack.load("segmenter"), "segment")
    (mask, binary, cutout, bbox, _), ui = segment(pack, image, segmenter)
    assert ui == {"text": ["Character Segment: image 1 (0-based) of 3 left empty: cannot process this image"]}
    assert mask[1].max() == 0 and binary[1].max() == 0 and bbox[1] == [0, 0, W, H]  # the reference's empty-mask box
    assert torch.equal(cutout[1], torch.ones(H, W, 3))  # all background, white
    ref = pack.load("segmenter").segment([from_array(image[i].numpy()) for i in (0, 2)])
    for i, r in zip((0, 2), ref):
        assert torch.equal(mask[i], torch.from_numpy(r.mask).float() / 255) and bbox[i] == list(r.bbox_xywh)


def test_pose_gives_an_image_with_a_bad_box_no_pose_and_poses_the_rest(pack):
    image = torch.rand(3, H, W, 3, generator=torch.Generator().manual_seed(2))
    (kps, control, coco, heat, preview), ui = pose(pack, image, bbox=[[0, 0, W, H], [5, 5, 0, 0], [2, 2, 20, 20]])
    assert ui["text"] == [("Illustrated Pose: image 1 (0-based) of 3 left empty: bbox 0: expected [x, y, w, h] "
                           "pixels with w > 0 and h > 0, got [5, 5, 0, 0]")]
    assert [len(f["people"]) for f in kps] == [1, 0, 1] and all(f["canvas_height"] == H for f in kps)
    data = json.loads(coco)
    assert len(data["images"]) == 3 and [a["image_id"] for a in data["annotations"]] == [1, 3]
    assert heat[1].max() == 0 and preview[1].max() == 0 and control[1].max() == 0
    assert heat[0].max() > 0 and preview[0].max() > 0 and control[0].max() > 0


@pytest.mark.parametrize("h,w", [(900, 2), (2, 900), (4000, 1), (1, 1)])
def test_extreme_sizes_get_results_in_every_node(pack, h, w):
    image = torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(3))
    start = time.perf_counter()
    (captions, _), ui = tag(pack, image)
    assert len(captions[0].split(", ")) == 5 and ui == {"text": captions}
    (mask, *_), ui = segment(pack, image)
    assert mask.shape == (1, h, w) and ui is None
    (kps, *_), ui = pose(pack, image, segmenter=pack.load("segmenter"))
    assert len(kps[0]["people"]) == 1 and "text" not in ui
    assert time.perf_counter() - start < 30  # generous: well under a second here


def test_a_16000x16000_image_gets_a_message_not_a_hang(pack):
    huge = torch.zeros(1, 1, 1, 3).expand(1, 16000, 16000, 3)  # a view: no 3 GB behind it
    start = time.perf_counter()
    (captions, scores_json), ui = tag(pack, huge)
    assert time.perf_counter() - start < 30
    assert captions == [""] and json.loads(scores_json) == [{}]
    assert "16000x16000 is too large" in ui["text"][0] and "ILLUSTPOSE_MAX_PIXELS" in ui["text"][0]
