"""``python -m illustpose annotate`` and image input handling, end to end with golden weights."""

from __future__ import annotations

import json
import os
import re
import stat

import numpy as np
import pytest
from PIL import Image

from checkpoint_factory import AUTHORS_PATHS
from shared_data import SAMPLES, load_golden
from illustpose.cli import main
from illustpose.errors import ImageError
from illustpose.images import from_array, iter_image_files, load_image, normalize_mode
from illustpose.keypoints import coco17_to_openpose18, parse_pose_keypoint, to_pose_keypoint
from illustpose.render import render_pose_keypoint


@pytest.fixture(scope="module")
def converted(authors_tree, tmp_path_factory):
    """The authors' files converted once to safetensors (faster to load in these tests)."""
    out = tmp_path_factory.mktemp("converted")
    for kind, rel in (("segmenter", "segmenter"), ("tagger", "tagger"), ("feat_match+data", "feat_match+data")):
        assert main(["weights", "convert", str(authors_tree / AUTHORS_PATHS[rel]), "--out", str(out / f"{kind}.safetensors")]) == 0
    return out


def test_annotate_writes_the_contract(converted, tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.open(SAMPLES / "retrieval_r0c1.png").save(src / "sub" / "a.png")
    Image.open(SAMPLES / "megumin_cutout.png").save(src / "b.png")
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    rc = main(["annotate", str(src), "--out", str(out), "--weights-dir", str(converted), "--offline", "--batch-size", "2", "--quiet"])
    assert rc == 0
    for stem in ("sub/a", "b"):
        for suffix in (".mask.png", ".cutout.png", ".tags.txt", ".tags.json", ".pose.json", ".pose_keypoint.json",
                       ".openpose.png", ".pose.png"):
            assert (out / f"{stem}{suffix}").is_file(), f"{stem}{suffix}"
    g = load_golden("retrieval_r0c1")
    mask = np.asarray(Image.open(out / "sub/a.mask.png"))
    assert mask.shape == tuple(g["orig_size_hw"]) and np.abs(mask.astype(int) - g["seg_mask_u8"]).max() <= 1
    doc = json.loads((out / "sub/a.pose.json").read_text())
    assert doc["image_size"] == g["orig_size_hw"].tolist()[::-1] and len(doc["annotations"]) == 1  # one character
    pose = doc["annotations"][0]
    assert pose["bbox"] == g["bbox_xywh"].tolist() and pose["id"] == 1
    kp = np.asarray(pose["keypoints"]).reshape(17, 3)
    np.testing.assert_allclose(kp[:, :2], g["pose_keypoints_xy"][:17], atol=0.5e-4)  # rounded to 4 decimals
    for name in ("sub/a.pose.json", "sub/a.pose_keypoint.json"):
        assert not re.search(r"\.\d{5}", (out / name).read_text()), f"{name}: more than 4 decimals"
    # the control image and POSE_KEYPOINT are the Illustrated Pose node's for the same joints
    pose_keypoint = json.loads((out / "sub/a.pose_keypoint.json").read_text())
    person, = parse_pose_keypoint(pose_keypoint)[0].people
    expected = coco17_to_openpose18(g["pose_keypoints_xy"][:17], np.ones(17, bool))
    np.testing.assert_allclose(person.xy, expected.xy, atol=0.5e-4)
    assert (person.present == expected.present).all()
    drawn = render_pose_keypoint(to_pose_keypoint([[expected]], [tuple(g["orig_size_hw"])]))[0]
    assert (np.asarray(Image.open(out / "sub/a.openpose.png")) == drawn).all()
    assert set(pose["extra_keypoints"]) >= {"nose_root", "body_upper"} and len(pose["keypoint_scores"]) == 17
    tags = json.loads((out / "sub/a.tags.json").read_text())["tags"]
    assert len(tags) == 1062
    np.testing.assert_allclose(list(tags.values()), g["tagger_probs"], atol=1e-4)
    txt = (out / "sub/a.tags.txt").read_text().strip().split(", ")
    assert len(txt) == int((g["tagger_probs"] >= 0.5).sum()) and " " in txt[0]
    cut = np.asarray(Image.open(out / "b.cutout.png"))
    assert cut.shape[2] == 4 and cut[..., 3].max() > 0
    modes = {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert modes == {0o666 & ~umask}  # the mode a normally created file gets, never mkstemp's 0600


def test_annotate_reports_bad_images_and_goes_on(converted, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(good)
    rc = main(["annotate", str(bad), str(good), "--out", str(tmp_path / "o"), "--weights-dir", str(converted),
               "--offline", "--skip", "tag", "--quiet"])
    assert rc == 1
    assert "broken.png" in capsys.readouterr().err
    assert (tmp_path / "o" / "good.pose.json").is_file()


def test_speed_flags_reach_the_detectors(converted, tmp_path, monkeypatch):
    import torch

    from illustpose.detector import Detector

    compiled = []
    monkeypatch.setattr(Detector, "compile", lambda self: compiled.append(self) or self)
    threads = torch.get_num_threads()
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(good)
    try:
        rc = main(["annotate", str(good), "--out", str(tmp_path / "o"), "--weights-dir", str(converted), "--offline",
                   "--skip", "tag", "--quiet", "--precision", "bf16", "--compile", "--threads", "1"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert rc == 0 and (tmp_path / "o" / "good.pose.json").is_file()
    assert [d.kind for d in compiled] == ["segmenter", "feat_match"] and {d.precision for d in compiled} == {"bf16"}


def test_annotate_empty_folder_and_missing_weights(tmp_path, capsys, monkeypatch):
    (tmp_path / "empty").mkdir()
    assert main(["annotate", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no images" in capsys.readouterr().err
    img = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(img)
    monkeypatch.setattr("illustpose.weights.PACK_WEIGHTS_DIR", tmp_path / "none")
    assert main(["annotate", str(img), "--out", str(tmp_path / "o"), "--offline"]) == 2
    err = capsys.readouterr().err
    assert "segmenter" in err and "huggingface.co" in err


def _image_of_mode(mode: str) -> Image.Image:
    """A small 9x7 image of ``mode`` with varied pixel values (alpha too where the mode has it)."""
    rng = np.random.default_rng(0)
    if mode in ("I;16", "I"):
        return Image.fromarray(rng.integers(0, 65536, (9, 7)).astype(np.uint16 if mode == "I;16" else np.int32))
    if mode == "F":
        return Image.fromarray(rng.uniform(-0.2, 1.2, (9, 7)).astype(np.float32))  # out-of-range values clip
    rgba = Image.fromarray(rng.integers(0, 256, (9, 7, 4), dtype=np.uint8), "RGBA")
    if mode == "PA":
        return rgba.convert("RGB").convert("P").convert("PA")
    return rgba.convert(mode)


def _expected_8bit_colour(img: Image.Image) -> np.ndarray:
    """The documented rule of illustpose.images for each mode, written out independently."""
    mode, a = img.mode, np.asarray(img)
    if mode in ("RGB", "RGBA"):
        return a
    if mode in ("L", "1"):
        grey = a.astype(np.uint8) * (255 if mode == "1" else 1)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "LA":
        return np.dstack([a[..., 0]] * 3 + [a[..., 1]])
    if mode in ("I;16", "I"):
        grey = np.clip(np.rint(a.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)  # 16-bit range
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        grey = np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)  # 0..1 range
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "PA" or (mode == "P" and "transparency" in img.info):
        return np.asarray(img.convert("RGBA"))
    return np.asarray(img.convert("RGB"))  # P without transparency, CMYK


@pytest.mark.parametrize("mode", ["L", "LA", "P", "PA", "I;16", "I", "F", "CMYK", "1", "RGBA", "RGB"])
def test_every_mode_becomes_8bit_colour_by_its_documented_rule(mode):
    img = _image_of_mode(mode)
    assert img.mode == mode
    out = normalize_mode(img)
    expected = _expected_8bit_colour(img)
    assert out.mode == ("RGBA" if expected.shape[2] == 4 else "RGB") and out.size == (7, 9)
    np.testing.assert_array_equal(np.asarray(out), expected)
    if mode in ("RGB", "RGBA"):
        assert out is img  # passed through untouched


def test_a_palette_with_transparency_keeps_it():
    img = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4), "P")
    img.info["transparency"] = 5
    out = normalize_mode(img)
    assert out.mode == "RGBA" and np.asarray(out)[1, 1, 3] == 0 and np.asarray(out)[0, 0, 3] == 255


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    assert load_image(tmp_path / "rot.jpg").size == (6, 4)  # width and height swapped, as viewers show it


def test_sixteen_bit_png_and_tiny_images(tmp_path):
    p = tmp_path / "deep.png"
    Image.fromarray(np.full((5, 4), 65535, np.uint16)).save(p)
    im = load_image(p)
    assert im.mode == "RGB" and np.asarray(im).min() == 255
    Image.new("RGBA", (1, 1), (0, 0, 0, 0)).save(tmp_path / "one.png")
    assert load_image(tmp_path / "one.png").size == (1, 1)


def test_bad_image_files(tmp_path):
    (tmp_path / "t.png").write_text("text")
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(tmp_path / "t.png")
    with pytest.raises(ImageError, match="no such"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="no such file or folder"):
        list(iter_image_files([tmp_path / "nope"]))


def test_huge_image_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("illustpose.images.MAX_PIXELS", 100)
    Image.new("RGB", (20, 20)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "big.png")


def test_from_array_conventions():
    img = from_array(np.full((2, 3, 3), 0.5, np.float32), alpha=np.ones((2, 3), np.float32))
    assert img.mode == "RGBA" and np.asarray(img)[0, 0].tolist() == [127, 127, 127, 255]
    with pytest.raises(ImageError, match="expected an"):
        from_array(np.zeros((2, 3, 5)))
