"""``--ray``: the same files as a local run, from a local Ray with 2 CPUs (skipped without Ray)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from illustpose.batch import RunRecord
from illustpose.cli import main

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'illustpose[ray]'")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "nodes"))
    from harness import write_tiny_weights

    folder = tmp_path_factory.mktemp("weights")
    write_tiny_weights(folder)
    return ["--tagger", str(folder / "tagger.safetensors"), "--offline", "--quiet", "--threshold", "0.2"]


def images(folder):
    (folder / "sub").mkdir(parents=True)
    for i, size in enumerate([(64, 48), (30, 90), (128, 128), (5, 400)]):
        Image.new("RGB", size, (40 * i, 200 - 30 * i, 90)).save(folder / ("sub" if i % 2 else ".") / f"im{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def captions(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.txt"))}


def test_ray_writes_what_a_local_run_writes(local_ray, tagger, tmp_path, capsys):
    local, remote = images(tmp_path / "local"), tmp_path / "remote"
    shutil.copytree(local, remote)
    assert main(["caption", str(local), *tagger]) == 1  # broken.png fails in both
    assert main(["caption", str(remote), "--ray", "--ray-actors", "2", *tagger]) == 1
    failed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 2 and all("broken.png" in line for line in failed)
    assert len(captions(local)) == 4 and captions(remote) == captions(local)


def test_ray_run_is_recorded_and_resumed(local_ray, tagger, tmp_path):
    """The run record written from the actors' results lets a later run skip what is done."""
    import argparse
    import functools

    from illustpose.batch import Counts, fingerprint
    from illustpose.cli.caption import CaptionTask
    from illustpose.distributed import run_on_ray

    folder = images(tmp_path / "data")
    args = argparse.Namespace(tagger=tagger[1], tags=None, weights_dir=[], offline=True, device="cpu",
                              precision="auto", exact=False, compile=False, threads=None, tagger_model=None,
                              threshold=0.2, keep_underscores=False, exclude_tags="", max_tags=0, prefix="p",
                              mode="overwrite")
    jobs = [(p, p.with_suffix(".txt")) for p in sorted(folder.rglob("im*.png"))]
    with RunRecord(tmp_path / "rec", "caption", fingerprint("s")) as record:
        counts = run_on_ray(functools.partial(CaptionTask, args), jobs, Counts(), batch_size=3, actors=1,
                            record=record)
        assert (counts.done, counts.failed) == (4, 0)
        assert all(record.is_finished(str(img), img) for img, _ in jobs)
        assert all(txt.read_text().startswith("p") for _, txt in jobs)


def test_annotate_on_ray_writes_what_a_local_run_writes(local_ray, tagger, tmp_path):
    weights = ["--weights-dir", str(Path(tagger[1]).parent), "--offline", "--quiet"]
    src = images(tmp_path / "in")
    # batch 1 on both sides: the same computation per image (how images are grouped moves floats by 1e-7)
    assert main(["annotate", str(src), "--out", str(tmp_path / "local"), *weights]) == 1
    assert main(["annotate", str(src), "--out", str(tmp_path / "ray"), "--ray", *weights]) == 1
    local = {p.relative_to(tmp_path / "local").as_posix(): p.read_bytes()
             for p in sorted((tmp_path / "local").rglob("*.*"))}
    remote = {p.relative_to(tmp_path / "ray").as_posix(): p.read_bytes() for p in sorted((tmp_path / "ray").rglob("*.*"))}
    assert len(local) == 4 * 8 and remote == local


def index_rows(path):
    """Every entry's columns but the time it was added, by id."""
    import sqlite3

    with sqlite3.connect(path) as db:
        return db.execute("SELECT id, source, sha256, image_width, image_height, bbox_x, bbox_y, bbox_w, bbox_h, "
                          "keypoints, present, descriptor, tags FROM entries ORDER BY id").fetchall()


@pytest.fixture
def torch_threads_kept():
    """--threads sets torch's thread count for the process: put it back for the other tests."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_index_build_on_ray_equals_a_local_build_and_resumes(local_ray, tagger, tmp_path, capsys, torch_threads_kept):
    """Actors compute the entries, the driver writes them in file order: the same index as a local
    build at batch 1; a rerun computes only what the index lacks."""
    # one torch thread on both sides (a Ray actor of 1 CPU has one): the thread count moves scores by a float32 ulp
    weights = ["--weights-dir", str(Path(tagger[1]).parent), "--offline", "--threads", "1", "--quiet"]
    src = images(tmp_path / "in")
    local, remote = tmp_path / "local.sqlite", tmp_path / "ray.sqlite"
    assert main(["index", "build", str(local), str(src), *weights]) == 1  # broken.png fails in both
    assert main(["index", "build", str(remote), str(src), "--ray", "--ray-actors", "2", "--commit-every", "2",
                 *weights]) == 1
    assert "failed: " in capsys.readouterr().err
    rows = index_rows(remote)
    assert len(rows) >= 3 and rows == index_rows(local)
    Image.new("RGB", (70, 50), (9, 9, 9)).save(src / "new.png")
    assert main(["index", "build", str(remote), str(src), "--ray", "--ray-actors", "1", *weights[:-1]]) == 1
    err = capsys.readouterr().err
    assert "indexed 1, skipped 4 (already done), failed 1 of 6 images" in err
    assert index_rows(remote)[:len(rows)] == rows and len(index_rows(remote)) > len(rows)
