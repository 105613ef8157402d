"""Danbooru Tag: captions chosen by the reference's threshold rule, with the node's options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from illustpose.images import from_array
from illustpose.results import TagResult

NODE = "DanbooruTag|illustpose"
SCORES = TagResult({"long_hair": 0.9, "smile": 0.5, "1girl": 0.99, "solo": 0.49, "Simple_Background": 0.7}, np.zeros(5))


def tag(pack, image, threshold=0.5, exclude="", underscores=True, sort=True, max_tags=0, **kw):
    return pack.run(NODE, image=image, tagger=pack.load("tagger"), threshold=threshold, exclude_tags=exclude,
                    replace_underscores=underscores, sort_by_score=sort, max_tags=max_tags, **kw)


@pytest.fixture
def select(pack):
    return pack.module.nodes.tag.select_tags


def test_threshold_is_inclusive_and_sorting_is_by_score(select):
    assert select(SCORES, 0.5, "", False, True, 0) == [
        ("1girl", 0.99), ("long_hair", 0.9), ("Simple_Background", 0.7), ("smile", 0.5)]
    in_rule_order = select(SCORES, 0.5, "", False, False, 0)
    assert [n for n, _ in in_rule_order] == ["long_hair", "smile", "1girl", "Simple_Background"]


def test_exclusions_ignore_case_spaces_and_underscores(select):
    kept = select(SCORES, 0.0, " simple background , LONG_HAIR,", True, True, 0)
    assert [n for n, _ in kept] == ["1girl", "smile", "solo"]


def test_max_tags_keeps_the_best_after_exclusion_and_underscores_become_spaces(select):
    assert select(SCORES, 0.0, "1girl", True, True, 2) == [("long hair", 0.9), ("Simple Background", 0.7)]


@pytest.mark.parametrize("batch", [1, 4])
def test_one_caption_per_image_in_outputs_and_ui(pack, batch):
    image = torch.rand(batch, 24, 32, 3, generator=torch.Generator().manual_seed(batch))
    (tags, scores_json), ui = tag(pack, image, threshold=0.3, underscores=False)
    tagger = pack.load("tagger")
    ref = [tagger.tag([from_array(im.numpy())])[0] for im in image]  # one image at a time, as the node runs
    assert isinstance(tags, list) and len(tags) == batch and ui == {"text": tags}
    scores = json.loads(scores_json)
    for caption, s, r in zip(tags, scores, ref):
        assert caption == ", ".join(s)  # the kept tags, in the node's (score) order
        # the golden tests' float tolerance for tagger probabilities (../shared/fidelity/README.md):
        # the same forward may round differently from run to run on a loaded machine
        assert s == pytest.approx(dict(r.above(0.3)), rel=0, abs=1e-4)


def test_the_transparency_mask_makes_transparent_pixels_white(pack):
    g = torch.Generator().manual_seed(11)
    rgb, alpha = torch.rand(1, 24, 32, 3, generator=g), (torch.rand(1, 24, 32, generator=g) > 0.5).float()
    (_, scores_json), _ = tag(pack, rgb, threshold=0.0, transparency=1.0 - alpha)
    ref = pack.load("tagger").tag([from_array(rgb[0].numpy(), alpha[0].numpy())])[0]
    assert json.loads(scores_json)[0] == pytest.approx({n.replace("_", " "): s for n, s in ref.scores.items()},
                                                       rel=0, abs=1e-4)


def test_cancel_stops_the_batch(pack):
    mm = pack.modules["comfy.model_management"]
    seen = []

    def hook(value, total, preview, node_id=None):
        seen.append(value)
        raise mm.InterruptProcessingException()

    pack.utils.PROGRESS_BAR_HOOK = hook
    with pytest.raises(mm.InterruptProcessingException):  # ComfyUI's own exception, not wrapped
        tag(pack, torch.rand(4, 24, 32, 3))
    assert seen == [1]  # the model stays loaded: ComfyUI's memory manager unloads it when it needs to
