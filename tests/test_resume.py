"""``annotate --resume``: a rerun rewrites nothing it finished, and redoes what changed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

from illustpose.cli import main


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parent / "nodes"))
    from harness import write_tiny_weights

    folder = tmp_path_factory.mktemp("weights")
    write_tiny_weights(folder)
    return ["--weights-dir", str(folder), "--offline", "--skip", "segment"]


def stamps(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*.*") if "illustpose-runs" not in p.name}


def test_resume_skips_what_is_done_and_redoes_what_changed(weights, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (40 + i, 30), (60 * i, 90, 30)).save(src / f"{i}.png")
    run = ["annotate", str(src), "--out", str(out), "--resume", *weights]
    assert main(run) == 0
    assert "annotated 3, skipped 0 (already done), failed 0 of 3 images" in capsys.readouterr().err
    first = stamps(out)
    assert len(first) == 3 * 6  # tags txt and json, pose json, pose_keypoint json, openpose png, pose png

    assert main(run) == 0  # nothing changed: nothing is rewritten
    assert "annotated 0, skipped 3 (already done), failed 0 of 3 images" in capsys.readouterr().err
    assert stamps(out) == first

    Image.new("RGB", (50, 30), (1, 2, 3)).save(src / "1.png")  # an input changed
    (out / "2.tags.txt").unlink()  # an output is gone
    assert main(run) == 0
    assert "annotated 2, skipped 1 (already done)" in capsys.readouterr().err
    now = stamps(out)
    assert all(now[k] == first[k] for k in first if k.startswith("0."))
    assert all(now[k] != first[k] for k in first if k.startswith("1."))

    assert main(run + ["--tag-threshold", "0.9"]) == 0  # another option: everything again
    assert "annotated 3, skipped 0" in capsys.readouterr().err

    assert main(["annotate", str(src), "--out", str(out), *weights]) == 0  # without --resume: all again
    assert "annotated 3, skipped 0" in capsys.readouterr().err
