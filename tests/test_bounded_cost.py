"""Bounded cost for any image: extreme aspect ratios, 1x1, and huge or bomb-sized images finish in
seconds with a result or one clear message, through the library and the CLI (tiny random-weight
models with small working sizes: the code paths of the 256 px models, at a fraction of the cost)."""

from __future__ import annotations

import json
import struct
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from illustpose import images as images_module
from illustpose.checkpoints import save_safetensors
from illustpose.cli import main
from illustpose.errors import ImageError, KeypointError
from illustpose.geometry import pose_cropbox, resize_min_size, segmenter_frame
from illustpose.images import from_array, load_image
from illustpose.models.feat_match import FeatMatchPoseNet
from illustpose.models.pose import PoseEstimator
from illustpose.models.segmenter import CharacterSegmenter, CharacterSegmenterNet
from illustpose.models.tagger import DanbooruTagger, DanbooruTaggerNet
from illustpose.pipeline import Pipeline
from illustpose.preprocess import (
    SEGMENTER_MAX_ASPECT,
    _over_white,
    pose_input,
    segmenter_input,
    tagger_input,
    to_tensor,
)

SEG, TAG, POSE = 32, 32, 64  # working sizes of the tiny models
TAGS = ["a", "b", "c", "d", "e"]
EXTREME = [(2, 900), (900, 2), (1, 4000), (4000, 1), (1, 1)]  # (width, height)
GUARD_S = 30  # generous: each case takes well under a second here


@contextmanager
def finishes_within(seconds: float):
    start = time.perf_counter()
    yield
    assert time.perf_counter() - start < seconds, f"took {time.perf_counter() - start:.1f} s"


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """segmenter / tagger / feat_match files with random weights and small working sizes."""
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    save_safetensors(folder / "segmenter.safetensors", CharacterSegmenterNet().state_dict(), model="segmenter",
                     hparams={"largs": {"bg_seg": {"size": SEG}}})
    save_safetensors(folder / "tagger.safetensors", DanbooruTaggerNet(len(TAGS)).state_dict(), model="tagger",
                     hparams={"largs": {"danbooru_sfw": {"size": TAG}}}, extra={"tags": json.dumps(TAGS)})
    save_safetensors(folder / "feat_match+data.safetensors",
                     FeatMatchPoseNet(heatmap_size=32, trunk_input_size=POSE).state_dict(), model="feat_match",
                     hparams={"largs": {"danbooru_coco": {"size": POSE, "padding": 0.1},
                                        "danbooru_sfw": {"size": POSE}}, "margs": {"size": 32}})
    return folder


@pytest.fixture(scope="module")
def pipeline(weights_dir, device):
    return Pipeline(CharacterSegmenter.from_pretrained(weights_dir / "segmenter.safetensors", device=device),
                    DanbooruTagger.from_pretrained(weights_dir / "tagger.safetensors", device=device),
                    PoseEstimator.from_pretrained(weights_dir / "feat_match+data.safetensors", device=device))


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_header_only(path, width: int, height: int):
    """A PNG that declares ``width`` x ``height`` RGB pixels and holds none (a bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    empty = zlib.compress(b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", empty) + chunk(b"IEND", b""))
    return path


# --------------------------------------------------------------------------- the library


@pytest.mark.parametrize("width,height", EXTREME)
def test_extreme_aspect_ratios_and_1x1_give_results_in_image_pixels(pipeline, width, height, monkeypatch):
    seen = []
    probabilities = pipeline.segmenter.probabilities
    monkeypatch.setattr(pipeline.segmenter, "probabilities", lambda b: seen.append(tuple(b.shape)) or probabilities(b))
    with finishes_within(GUARD_S):
        ann, = pipeline.annotate([picture(width, height)])
    assert max(seen[0][2:]) <= SEGMENTER_MAX_ASPECT * SEG and min(seen[0][2:]) == SEG  # the work is capped
    seg = ann.segmentation
    assert seg.mask.shape == (height, width) and seg.mask.dtype == np.uint8
    x, y, w, h = seg.bbox_xywh
    assert 0 <= x and 0 <= y and w >= 1 and h >= 1 and x + w <= width and y + h <= height
    assert len(ann.tags.scores) == len(TAGS) and np.isfinite(ann.tags.logits).all()
    assert ann.pose.image_size_hw == (height, width) and np.isfinite(ann.pose.keypoints).all()
    assert ann.pose.bbox_xywh == seg.bbox_xywh


def test_letterboxed_segmentation_keeps_only_the_image_part_of_the_canvas(pipeline):
    image = picture(2, 900)
    (ch, cw), (top, left, h, w) = segmenter_frame((900, 2), SEG, SEGMENTER_MAX_ASPECT * SEG)
    assert (ch, cw) == (4 * SEG, SEG) and (top, h, w) == (0, 4 * SEG, 1)  # 1 px wide, centred, white around
    x = segmenter_input(image, SEG)
    assert x.shape == (3, ch, cw) and (x[:, :, :left] == 1).all() and (x[:, :, left + w:] == 1).all()
    seg = pipeline.segmenter.segment([image])[0]
    full = pipeline.segmenter.probabilities(x[None])[0]
    assert np.array_equal(seg.probability, full[:, left:left + w].numpy())
    u8 = Image.fromarray((full[:, left:left + w] * 255).byte().numpy(), "L")
    assert np.array_equal(seg.mask, np.asarray(u8.resize((2, 900), Image.BICUBIC)))


@pytest.mark.parametrize("hw", [(300, 200), (199, 300), (SEG, 4 * SEG), (4 * SEG + 3, SEG + 1), (5, 20), (1, 1)])
def test_images_the_reference_handles_keep_its_exact_input(hw):
    image = picture(hw[1], hw[0], seed=1).convert("RGBA")
    h, w = resize_min_size(hw, SEG)
    expected = to_tensor(_over_white(image.resize((w, h), Image.BILINEAR)))
    assert torch.equal(segmenter_input(image, SEG), expected)
    assert segmenter_frame(hw, SEG, 4 * SEG) == ((h, w), (0, 0, h, w))


def test_segmenter_frame_beyond_the_cap():
    assert segmenter_frame((SEG, 4 * SEG + 4), SEG, 4 * SEG) == ((SEG, 4 * SEG), (0, 0, SEG - 1, 4 * SEG))
    assert segmenter_frame((1, 4000), 256, 1024) == ((256, 1024), (127, 0, 1, 1024))
    assert segmenter_frame((4000, 3), 256, 1024) == ((1024, 256), (0, 127, 1024, 1))


def test_tagger_input_of_a_strip_has_a_one_pixel_short_side():
    # the reference's resize makes the short side int(2 * 256 / 900) = 0 and fails
    x = tagger_input(Image.new("RGB", (2, 900), (255, 0, 0)), 256)
    assert x.shape == (3, 256, 256)
    red = (x[0] == 1) & (x[1] == 0)
    assert red.any(dim=0).sum() == 1 and red.any(dim=1).all()  # one column, the full height


def test_a_crop_too_large_to_materialise_is_built_at_the_crop_size():
    strip = Image.new("RGB", (1, 100_000), (200, 100, 50))
    cb = pose_cropbox((0, 0, 100_000, 1), 256, 0.1)  # a 110,000 px square source: 48 GB as RGBA
    with finishes_within(GUARD_S):
        x = pose_input(strip, cb)
    assert x.shape == (3, 256, 256)
    lit = (x > 0).any(dim=0)
    assert lit.any(dim=0).sum() == 1 and abs(lit.sum() - 256 / 1.1) <= 1  # one column: the strip, 1/1.1 of the height
    assert torch.allclose(x[:, lit], torch.tensor([200, 100, 50.0])[:, None] / 255)


def test_the_resampled_crop_is_close_to_the_exact_one(monkeypatch):
    ramp = np.linspace(30, 220, 300)[None, :, None] + np.linspace(0, 30, 40)[:, None, None]
    image = Image.fromarray(np.repeat(ramp, 3, axis=2).astype(np.uint8))  # smooth: sub-pixel shifts barely show
    cb = pose_cropbox((0, 0, 40, 300), 256, 0.1)
    exact = pose_input(image, cb)
    monkeypatch.setattr(images_module, "MAX_PIXELS", 2 * 300 * 40)  # the 330 x 330 crop is now "too large"
    resampled = pose_input(image, cb)
    lit = (exact > 0).any(dim=0)
    assert (lit != (resampled > 0).any(dim=0)).sum() <= 2 * 256  # the image's place: at most a line per side
    interior = lit.clone()
    interior[1:-1] &= lit[:-2] & lit[2:]
    interior[:, 1:-1] &= lit[:, :-2] & lit[:, 2:]
    assert (exact[:, interior] - resampled[:, interior]).abs().max() <= 3 / 255


def test_a_pose_box_without_area_is_a_clear_error(pipeline):
    with pytest.raises(KeypointError, match=r"bbox 0: expected \[x, y, w, h\] pixels with w > 0 and h > 0"):
        pipeline.pose.estimate([picture(20, 20)], [[3, 3, 0, 5]])


def test_a_16000x16000_bomb_file_is_refused_before_decoding(tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 16000, 16000)
    with finishes_within(GUARD_S), pytest.raises(ImageError, match="too large.*ILLUSTPOSE_MAX_PIXELS"):
        load_image(bomb)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_a_16000x16000_array_is_refused_before_any_conversion(dtype):
    huge = np.broadcast_to(np.zeros((1, 1, 3), dtype), (16000, 16000, 3))  # no memory behind it
    message = r"16000x16000 is too large \(256000000 pixels, limit"
    with finishes_within(GUARD_S), pytest.raises(ImageError, match=message):
        from_array(huge)


def test_every_model_refuses_an_image_over_the_limit(pipeline, monkeypatch):
    monkeypatch.setattr(images_module, "MAX_PIXELS", 1000)
    image = picture(40, 30)
    for run in (lambda: pipeline.segmenter.segment([image]), lambda: pipeline.tagger.tag([image]),
                lambda: pipeline.pose.estimate([image], [[0, 0, 40, 30]])):
        with pytest.raises(ImageError, match="40x30 is too large"):
            run()


def test_the_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ILLUSTPOSE_MAX_PIXELS", "300_000_000")
    assert images_module._limit_from_environment() == 300_000_000
    for bad in ("", "lots", "-5", "0"):
        monkeypatch.setenv("ILLUSTPOSE_MAX_PIXELS", bad)
        assert images_module._limit_from_environment() == 2 * 89_478_485


def test_float_arrays_are_converted_in_pieces_with_the_same_bytes():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (3, 1_500_000, 3), dtype=np.uint8)
    alpha = rng.uniform(-0.1, 1.1, (3, 1_500_000)).astype(np.float32)  # 2 rows per piece: two pieces
    expected = (255.0 * np.clip(alpha.astype(np.float64), 0.0, 1.0)).astype(np.uint8)
    assert np.array_equal(np.asarray(from_array(rgb, alpha))[..., 3], expected)


# --------------------------------------------------------------------------- the CLI


def test_annotate_gives_every_image_a_result_or_one_message(weights_dir, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for w, h in EXTREME:
        picture(w, h).save(src / f"strip_{w}x{h}.png")
    picture(40, 30).save(src / "normal.png")
    png_header_only(src / "huge.png", 16000, 16000)
    out = tmp_path / "out"
    with finishes_within(4 * GUARD_S):
        rc = main(["annotate", str(src), "--out", str(out), "--weights-dir", str(weights_dir), "--offline",
                   "--batch-size", "3", "--quiet"])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.count("huge.png") == 1 and "too large" in err
    for w, h in [*EXTREME, (40, 30)]:
        stem = out / (f"strip_{w}x{h}" if (w, h) != (40, 30) else "normal")
        assert Image.open(f"{stem}.mask.png").size == (w, h)
        assert len(json.loads(Path(f"{stem}.tags.json").read_text())["tags"]) == len(TAGS)
        assert all(a["bbox"][2:] >= [1, 1] for a in json.loads(Path(f"{stem}.pose.json").read_text())["annotations"])
    assert not list(out.glob("huge.*"))


def test_annotate_retries_a_failed_batch_one_image_at_a_time(weights_dir, tmp_path, capsys, monkeypatch):
    import illustpose.models.tagger as tagger_module

    def refuse_width_7(img, size):
        if img.width == 7:
            raise ImageError("cannot process this one")
        return tagger_input(img, size)

    monkeypatch.setattr(tagger_module, "tagger_input", refuse_width_7)
    picture(7, 20).save(tmp_path / "bad.png")
    picture(20, 20).save(tmp_path / "good.png")
    rc = main(["annotate", str(tmp_path / "bad.png"), str(tmp_path / "good.png"), "--out", str(tmp_path / "o"),
               "--weights-dir", str(weights_dir), "--offline", "--batch-size", "2", "--quiet"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "bad.png: cannot process this one" in err and "good.png" not in err
    assert (tmp_path / "o" / "good.tags.json").is_file() and not (tmp_path / "o" / "bad.tags.json").exists()
