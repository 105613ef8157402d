"""``caption``: LoRA captions in place, with the reference script's semantics (danbooru_tagger_lora.py)."""

from __future__ import annotations

import json
import os
import stat

import pytest
from PIL import Image

from checkpoint_factory import AUTHORS_PATHS
from shared_data import SAMPLES, load_golden
from illustpose.captions import caption_jobs, caption_line, merge_captions, write_caption
from illustpose.cli import main

SAMPLE_NAMES = ("megumin", "retrieval_r0c1", "retrieval_r0c2")


def reference_caption(probs, names, prefix="", threshold=0.5, keep_underscore=False) -> str:
    """What the reference script writes, restated from its source: prefix, then the tags with
    probability >= threshold sorted by descending probability, underscores to spaces, ', '-joined."""
    outs = [k for k, v in sorted(zip(names, probs), key=lambda x: -x[1]) if v >= threshold]
    out_txt = ([] if prefix == "" else [prefix]) + (outs if keep_underscore else [x.replace("_", " ") for x in outs])
    return ", ".join(out_txt)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A LoRA-style folder: samples at the top and in a sub-folder, one upper-case extension."""
    if not SAMPLES.is_dir():
        pytest.skip("../shared/samples is not present")
    root = tmp_path_factory.mktemp("dataset")
    (root / "sub").mkdir()
    Image.open(SAMPLES / "megumin.png").save(root / "megumin.png")
    Image.open(SAMPLES / "retrieval_r0c1.png").save(root / "sub" / "retrieval_r0c1.PNG", format="PNG")
    Image.open(SAMPLES / "retrieval_r0c2.png").save(root / "retrieval_r0c2.png")
    (root / "notes.md").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def tagger_args(authors_tree):
    return ["--tagger", str(authors_tree / AUTHORS_PATHS["tagger"]), "--offline", "--quiet"]


@pytest.fixture(scope="module")
def tag_names(authors_tree):
    return [r["name"] for r in json.loads((authors_tree / AUTHORS_PATHS["rules"]).read_text())]


def caption_file(root, name):
    return next(root.rglob(f"{name}.txt"))


def test_captions_equal_the_reference_scripts_files(dataset, tagger_args, tag_names, tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    assert main(["caption", str(dataset), "--prefix", "mychar", "--batch-size", "2", *tagger_args]) == 0
    for name in SAMPLE_NAMES:
        probs = load_golden(name)["tagger_probs"]
        written = caption_file(dataset, name)
        assert written.read_text(encoding="utf-8") == reference_caption(probs, tag_names, "mychar")
        assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask
    assert not (dataset / "notes.txt").exists()


def test_modes_skip_append_overwrite(dataset, tagger_args, tag_names, tmp_path, capsys):
    target = dataset / "megumin.txt"
    expected = reference_caption(load_golden("megumin")["tagger_probs"], tag_names)
    target.write_text("hand written\n", encoding="utf-8")
    assert main(["caption", str(dataset / "megumin.png"), "--mode", "skip", *tagger_args[:-1]]) == 0
    assert target.read_text(encoding="utf-8") == "hand written\n"
    assert "skipped 1 (already done)" in capsys.readouterr().err

    for _ in range(2):  # a second append adds nothing: only tags the file lacks are appended
        assert main(["caption", str(dataset / "megumin.png"), "--mode", "append", *tagger_args]) == 0
        assert target.read_text(encoding="utf-8") == "hand written, " + expected

    assert main(["caption", str(dataset / "megumin.png"), "--keep-underscores", "--threshold", "0.3",
                 *tagger_args]) == 0
    assert target.read_text(encoding="utf-8") == reference_caption(
        load_golden("megumin")["tagger_probs"], tag_names, threshold=0.3, keep_underscore=True)


def test_no_recursion_and_formats(dataset, tagger_args, tmp_path):
    for f in dataset.rglob("*.txt"):
        f.unlink()
    assert main(["caption", str(dataset), "--no-recursive", "--formats", "jpg", "--formats", "PNG,webp",
                 *tagger_args]) == 0
    assert sorted(p.name for p in dataset.rglob("*.txt")) == ["megumin.txt", "retrieval_r0c2.txt"]


def test_nothing_to_caption_and_a_bad_image(tmp_path, tagger_args, capsys):
    assert main(["caption", str(tmp_path), *tagger_args]) == 2
    assert "no jpg, png, jpeg, tga, webp, bmp images found" in capsys.readouterr().err
    (tmp_path / "broken.png").write_bytes(b"not a png")
    Image.new("RGB", (40, 30), (200, 100, 50)).save(tmp_path / "fine.jpg")
    assert main(["caption", str(tmp_path), "--workers", "0", *tagger_args[:-1]]) == 1
    err = capsys.readouterr().err
    assert "failed: " in err and "broken.png" in err and "captioned 1, skipped 0 (already done), failed 1" in err
    assert (tmp_path / "fine.txt").is_file() and not (tmp_path / "broken.txt").exists()


# ---------------------------------------------------------------- library rules


def test_caption_line_and_merge():
    assert caption_line("mychar, ", "long hair, smile") == "mychar, long hair, smile"
    assert caption_line("", "a") == "a" and caption_line("p", "") == "p" and caption_line(" , ", "") == ""
    assert merge_captions("a, b\n", "b, c") == "a, b, c"
    assert merge_captions("", "b, c") == "b, c" and merge_captions("a", "") == "a"


def test_write_caption_modes(tmp_path):
    f = tmp_path / "x.txt"
    assert write_caption(f, "a, b", "skip") and f.read_text() == "a, b"
    assert not write_caption(f, "c", "skip") and f.read_text() == "a, b"
    assert write_caption(f, "b, c", "append") and f.read_text() == "a, b, c"
    assert write_caption(f, "d", "overwrite") and f.read_text() == "d"
    with pytest.raises(ValueError, match="caption mode must be one of overwrite, append, skip"):
        write_caption(f, "d", "replace")


def test_caption_jobs_names_like_the_reference(tmp_path):
    for name in ("a.b.png", "c.JPG", "d.gif", "e.mask.png", "sub/f.tga"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    jobs = [(i.relative_to(tmp_path).as_posix(), t.relative_to(tmp_path).as_posix())
            for i, t in caption_jobs([tmp_path], extension="caption")]
    assert jobs == [("a.b.png", "a.b.caption"), ("c.JPG", "c.caption"), ("sub/f.tga", "sub/f.caption")]
    assert [t.name for _, t in caption_jobs([tmp_path / "d.gif"])] == ["d.txt"]  # explicit files always count
    assert len(list(caption_jobs([tmp_path], recursive=False))) == 2
