"""The pose index on ../shared/samples: reference descriptors from the golden outputs, and the
``index`` CLI end to end with the real pipeline (golden-rule weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.distance import pdist

from checkpoint_factory import AUTHORS_PATHS
from illustpose.cli import main
from illustpose.geometry import Cropbox, cropbox_points
from illustpose.retrieval import PoseIndex, pose_descriptors
from shared_data import FIDELITY, SAMPLE_STEMS, SAMPLES, load_golden

pytestmark = pytest.mark.skipif(not (FIDELITY / "golden").is_dir(), reason="../shared/fidelity is not present")


@pytest.mark.parametrize("stem", SAMPLE_STEMS)
def test_descriptor_of_golden_pose_is_the_reference_retrieval_descriptor(stem):
    g = load_golden(stem)
    cb = Cropbox(*(tuple(row) for row in g["cropbox"].tolist()))  # the reference's own cropbox
    reference = pdist(cropbox_points(g["pose_keypoints_rc"], cb))  # pose_retrieval.py retrieve_nearest
    ours = pose_descriptors(g["pose_keypoints_xy"], g["bbox_xywh"], dtype=np.float64)
    np.testing.assert_array_equal(ours, reference)
    assert reference.shape == (300,)


@pytest.fixture(scope="module")
def converted(authors_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted_index")
    for kind in ("segmenter", "feat_match+data"):
        assert main(["weights", "convert", str(authors_tree / AUTHORS_PATHS[kind]), "--out",
                     str(out / f"{kind}.safetensors")]) == 0
    return out


def test_cli_builds_and_queries_an_index_of_the_samples(converted, tmp_path, capsys):
    src = tmp_path / "refs"
    src.mkdir()
    Image.open(SAMPLES / "retrieval_r0c1.png").save(src / "r0c1.png")  # one model run keeps this fast
    index = tmp_path / "samples.sqlite"
    flags = ["--weights-dir", str(converted), "--offline", "--device", "cpu", "--quiet"]
    assert main(["index", "build", str(index), str(src), *flags]) == 0
    assert main(["index", "build", str(index), str(src), *flags]) == 0  # resumed: nothing to run
    g = load_golden("retrieval_r0c1")
    with PoseIndex(index) as ix:
        entry = ix.get(1)
        assert len(ix) == 1 and entry.image_size_hw == tuple(g["orig_size_hw"])
        np.testing.assert_allclose(entry.pose.keypoints, g["pose_keypoints_xy"], atol=1e-9)
        assert entry.pose.bbox_xywh == tuple(float(v) for v in g["bbox_xywh"])
    assert main(["index", "export", str(index), str(tmp_path / "refs.json")]) == 0
    ann = json.loads((tmp_path / "refs.json").read_text())["annotations"][0]
    (tmp_path / "query.json").write_text(json.dumps(ann))  # its own COCO-17 pose, queried without models
    capsys.readouterr()
    assert main(["index", "query", str(index), str(tmp_path / "query.json"), "--json", "-k", "5", "--mirror"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"rank": 1, "distance": 0.0, "source": str((src / "r0c1.png").resolve()), "mirrored": False}]
