"""Shared fixtures: golden weights rebuilt from ../shared/fidelity, written in every released format."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from checkpoint_factory import (AUTHORS_PATHS, write_hf_segmenter, write_hf_tagger, write_lightning_ckpt,
                                write_rules_json)

from shared_data import FIDELITY

torch.set_num_threads(2)


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="where the tests that compute model outputs (fidelity, golden, speed paths) run: "
                          "cpu (default), cuda, cuda:N")


def pytest_configure(config):
    from illustpose.detector import check_device
    from illustpose.errors import DeviceError

    try:
        check_device(config.getoption("--device"))
    except DeviceError as e:
        raise pytest.UsageError(f"--device: {e}") from None


@pytest.fixture(scope="session")
def device(request) -> str:
    """The ``--device`` the model-output tests run on (``cpu`` unless told)."""
    return request.config.getoption("--device")


@pytest.fixture(scope="session")
def weights_rule():
    """The golden weight rule module (skips when ../shared is absent)."""
    if not (FIDELITY / "weights_rule.py").is_file():
        pytest.skip("../shared/fidelity is not present")
    sys.path.insert(0, str(FIDELITY))
    import weights_rule

    return weights_rule


@pytest.fixture(scope="session")
def golden_state_dicts(weights_rule):
    """{model: {lightning_key: tensor}} exactly as the golden outputs were computed with."""
    out = {}
    for model in ("tagger", "segmenter"):
        out[model] = {k: torch.from_numpy(v) for k, v in weights_rule.state_dict_for(model).items()}
    shapes = weights_rule.key_shapes("feat_match", include_unused=True)  # all 916 keys, rcnn.* zeros
    out["feat_match"] = {k: torch.from_numpy(np.asarray(v)) for k, v in weights_rule.state_dict_for("feat_match", shapes).items()}
    return out


@pytest.fixture(scope="session")
def authors_tree(tmp_path_factory, golden_state_dicts):
    """A folder laid out like the authors' unzipped bizarre_pose_models.zip, golden weights inside."""
    root = tmp_path_factory.mktemp("authors")
    sds = golden_state_dicts
    write_lightning_ckpt(root / AUTHORS_PATHS["tagger"], "tagger", sds["tagger"], pl_version="1.1.5")
    write_lightning_ckpt(root / AUTHORS_PATHS["segmenter"], "segmenter", sds["segmenter"], pl_version="1.1.5")
    write_lightning_ckpt(root / AUTHORS_PATHS["feat_match+data"], "feat_match", sds["feat_match"],
                         trainable_prefix="keypoint_head.")
    write_rules_json(root / AUTHORS_PATHS["rules"])
    return root


@pytest.fixture(scope="session")
def hf_tree(tmp_path_factory, golden_state_dicts):
    """A folder with the HF community files (tagger.pth, segmenter.pth, tags.txt)."""
    root = tmp_path_factory.mktemp("hf")
    write_hf_tagger(root / "tagger.pth", golden_state_dicts["tagger"])
    write_hf_segmenter(root / "segmenter.pth", golden_state_dicts["segmenter"])
    (root / "tags.txt").write_text("".join(f"tag_{i:04d}\n" for i in range(1062)))
    return root
