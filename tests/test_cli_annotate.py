"""``python -m illustpose annotate`` and image input handling, end to end with golden weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from checkpoint_factory import AUTHORS_PATHS
from shared_data import SAMPLES, load_golden
from illustpose.cli import main
from illustpose.errors import ImageError
from illustpose.images import from_array, iter_image_files, load_image, normalize_mode


@pytest.fixture(scope="module")
def converted(authors_tree, tmp_path_factory):
    """The authors' files converted once to safetensors (faster to load in these tests)."""
    out = tmp_path_factory.mktemp("converted")
    for kind, rel in (("segmenter", "segmenter"), ("tagger", "tagger"), ("feat_match+data", "feat_match+data")):
        assert main(["weights", "convert", str(authors_tree / AUTHORS_PATHS[rel]), "--out", str(out / f"{kind}.safetensors")]) == 0
    return out


def test_annotate_writes_the_contract(converted, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.open(SAMPLES / "retrieval_r0c1.png").save(src / "sub" / "a.png")
    Image.open(SAMPLES / "megumin_cutout.png").save(src / "b.png")
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    rc = main(["annotate", str(src), "--out", str(out), "--weights-dir", str(converted), "--offline", "--batch-size", "2", "--quiet"])
    assert rc == 0
    for stem in ("sub/a", "b"):
        for suffix in (".mask.png", ".cutout.png", ".tags.txt", ".tags.json", ".pose.json", ".pose.png"):
            assert (out / f"{stem}{suffix}").is_file(), f"{stem}{suffix}"
    g = load_golden("retrieval_r0c1")
    mask = np.asarray(Image.open(out / "sub/a.mask.png"))
    assert mask.shape == tuple(g["orig_size_hw"]) and np.abs(mask.astype(int) - g["seg_mask_u8"]).max() <= 1
    pose = json.loads((out / "sub/a.pose.json").read_text())
    assert pose["bbox"] == g["bbox_xywh"].tolist()
    kp = np.asarray(pose["keypoints"]).reshape(17, 3)
    np.testing.assert_allclose(kp[:, :2], g["pose_keypoints_xy"][:17], atol=1e-9)
    assert set(pose["extra_keypoints"]) >= {"nose_root", "body_upper"} and len(pose["keypoint_scores"]) == 17
    tags = json.loads((out / "sub/a.tags.json").read_text())["tags"]
    assert len(tags) == 1062
    np.testing.assert_allclose(list(tags.values()), g["tagger_probs"], atol=1e-4)
    txt = (out / "sub/a.tags.txt").read_text().strip().split(", ")
    assert len(txt) == int((g["tagger_probs"] >= 0.5).sum()) and " " in txt[0]
    cut = np.asarray(Image.open(out / "b.cutout.png"))
    assert cut.shape[2] == 4 and cut[..., 3].max() > 0


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


@pytest.mark.parametrize("mode", ["L", "LA", "P", "PA", "I;16", "I", "F", "CMYK", "1", "RGBA", "RGB"])
def test_every_mode_becomes_8bit_colour(mode, tmp_path):
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (9, 7, 3), dtype=np.uint8), "RGB")
    if mode in ("I;16", "I", "F"):
        img = Image.fromarray((rng.random((9, 7)) * (65535 if mode != "F" else 1)).astype(
            {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
    elif mode == "PA":
        img = base.convert("P").convert("PA")
    else:
        img = base.convert(mode)
    out = normalize_mode(img)
    assert out.mode in ("RGB", "RGBA") and out.size == (7, 9)


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
