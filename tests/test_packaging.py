"""Every way of installing and running: a wheel installed outside the repository, and a clone
named ``illustpose`` used from the folder that holds it (where its root shadows the library)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from illustpose.checkpoints import save_safetensors
from illustpose.models.feat_match import FeatMatchPoseNet
from illustpose.models.segmenter import CharacterSegmenterNet
from illustpose.registry import get_weights

REPO = Path(__file__).resolve().parent.parent


def _run(args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ.update(HF_HUB_OFFLINE="1", **env)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    """Segmenter and feat_match+data safetensors with random weights (nothing here is a real result)."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    for name, net in (("segmenter", CharacterSegmenterNet()), ("feat_match+data", FeatMatchPoseNet())):
        w = get_weights(name)
        save_safetensors(folder / f"{name}.safetensors", net.state_dict(), model=w.architecture, hparams=w.hparams)
    return folder


@pytest.fixture(scope="module")
def drawing(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "drawing.png"
    rgb = np.full((96, 64, 3), 255, np.uint8)
    rgb[20:80, 20:44] = (200, 60, 90)
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    """The project built as a wheel and installed (without dependencies) into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools leaves build/ and *.egg-info beside the sources it builds
    src = shutil.copytree(REPO, tmp / "src", ignore=shutil.ignore_patterns(
        ".git", ".venv", ".gl", "build", "dist", "*.egg-info", "__pycache__", "weights", "tests", "benchmarks"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    if build.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{build.stderr[-2000:]}")
    wheel, = (tmp / "dist").glob("illustpose-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                              str(tmp / "site"), str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    return tmp / "site"


def test_the_wheel_holds_the_library_only(wheel_site):
    top = {p.name for p in wheel_site.iterdir() if not p.name.endswith(".dist-info")}
    assert top == {"illustpose", "bin"}  # the package and the console script; no weights/, nodes/ or tests/


def test_a_wheel_installed_outside_the_repository_lists_weights_and_annotates(wheel_site, random_weights, drawing,
                                                                             tmp_path):
    env = {"PYTHONPATH": str(wheel_site), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    where = _run(["-c", "import illustpose.weights as w; print(w.__file__); print(w.PACK_WEIGHTS_DIR)"], tmp_path, **env)
    assert where.returncode == 0, where.stderr
    module, pack_dir = where.stdout.split()
    assert Path(module).is_relative_to(wheel_site)
    assert Path(pack_dir) == tmp_path / "cache" / "illustpose" / "weights"  # not site-packages/weights

    listed = _run(["-m", "illustpose", "weights", "list"], tmp_path, **env)
    assert listed.returncode == 0, listed.stderr
    assert "feat_match+data" in listed.stdout and "segmenter" in listed.stdout

    out = tmp_path / "out"
    done = _run(["-m", "illustpose", "annotate", str(drawing), "--out", str(out), "--weights-dir",
                 str(random_weights), "--offline", "--skip", "tag", "--quiet"], tmp_path, **env)
    assert done.returncode == 0, done.stderr
    pose = json.loads((out / "drawing.pose.json").read_text())
    assert pose["image_size"] == [64, 96]  # [w, h]
    assert (out / "drawing.mask.png").is_file()


@pytest.fixture
def parent_of_clone(tmp_path) -> Path:
    """A folder holding the repository under the name ComfyUI's custom_nodes wants: ``illustpose``."""
    (tmp_path / "illustpose").symlink_to(REPO, target_is_directory=True)
    return tmp_path


def test_the_cli_runs_from_the_folder_that_holds_a_clone(parent_of_clone):
    for args in (["--help"], ["weights", "list"]):
        done = _run(["-m", "illustpose", *args], parent_of_clone)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr


def test_the_library_imports_from_the_folder_that_holds_a_clone(parent_of_clone):
    code = "import illustpose.weights as w; from illustpose import Pipeline, PoseIndex, __version__; print(w.__file__)"
    done = _run(["-c", code], parent_of_clone)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == REPO / "illustpose" / "weights.py"
