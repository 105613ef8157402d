"""The allow-list reader of the authors' retrieval pickles: what it reads, what it refuses."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from illustpose.errors import CheckpointError, UnsafeCheckpointError
from illustpose.retrieval.safe_pickle import Recorded, load_data_pickle

OLD = Path(__file__).parent / "data" / "danbooru_sklearn_1_0_1"


class _Evil:
    """Pickles as a call of ``func(*args)``: what a crafted file does to run code."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _load(obj_or_bytes, protocol=4):
    data = obj_or_bytes if isinstance(obj_or_bytes, bytes) else pickle.dumps(obj_or_bytes, protocol=protocol)
    return load_data_pickle(io.BytesIO(data), "test.pkl")


@pytest.mark.parametrize("payload, name", [
    (lambda s: _Evil(os.system, f"touch {s}"), "system"),
    (lambda s: _Evil(eval, f"open({str(s)!r}, 'w')"), r"\.eval"),
    (lambda s: _Evil(subprocess.Popen, ["touch", str(s)]), r"\.Popen"),
    (lambda s: {"rows": [1, 2, {"inner": _Evil(os.system, f"touch {s}")}]}, "system"),
])
def test_code_in_a_pickle_is_refused_naming_the_global_and_nothing_runs(tmp_path, payload, name):
    sentinel = tmp_path / "ran"
    for protocol in (2, 4, 5):
        with pytest.raises(UnsafeCheckpointError, match=name) as err:
            _load(payload(sentinel), protocol)
        assert "Nothing was executed" in str(err.value) and "test.pkl" in str(err.value)
    assert not sentinel.exists()


def test_stand_ins_refuse_being_used_as_gadgets():
    # newObj may only create recorded stand-ins; _codecs.encode only latin-1
    new_obj = pickle.dumps(_Evil(_Evil, 1))  # a plain class the allow-list does not know
    with pytest.raises(UnsafeCheckpointError):
        _load(new_obj)
    crafted = (b"\x80\x02csklearn.neighbors._kd_tree\nnewObj\ncbuiltins\nset\n\x85R.")
    with pytest.raises(UnsafeCheckpointError, match="newObj"):
        _load(crafted)
    rot13 = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(UnsafeCheckpointError, match="rot13"):
        _load(rot13)


def test_damaged_pickle_is_one_clear_error():
    with pytest.raises(CheckpointError, match="not a readable pickle"):
        _load(pickle.dumps({"a": np.arange(5)})[:-7])


def test_plain_data_reads_in_every_protocol():
    data = {"ids": {1, 2, 3}, "f": frozenset([4]), "a": np.arange(6, dtype=np.float32).reshape(2, 3),
            "s": np.int64(7), "b": b"\x00\xff", "t": (1.5, "x")}
    for protocol in (2, 3, 4, 5):
        got = _load(data, protocol)
        assert got["ids"] == {1, 2, 3} and got["f"] == frozenset([4]) and got["b"] == b"\x00\xff"
        np.testing.assert_array_equal(got["a"], data["a"])
        assert got["s"] == 7 and got["t"] == (1.5, "x")


@pytest.mark.parametrize("algorithm", ["brute", "kd_tree", "ball_tree"])
def test_current_sklearn_neighbours_state_is_recorded_without_sklearn_code(algorithm):
    neighbors = pytest.importorskip("sklearn.neighbors")
    x = np.random.default_rng(0).random((30, 20))
    fitted = neighbors.NearestNeighbors(n_neighbors=4, algorithm=algorithm).fit(x)
    for protocol in (2, 4, 5):
        got = _load(fitted, protocol)
        assert isinstance(got, Recorded) and got.qualname.endswith(".NearestNeighbors")
        np.testing.assert_array_equal(got.state["_fit_X"], x)
        assert got.state["n_neighbors"] == 4 and got.state["effective_metric_"] == "euclidean"
        tree = got.state["_tree"]
        assert (tree is None) == (algorithm == "brute")
        if tree is not None:
            assert isinstance(tree, Recorded) and isinstance(tree.state, tuple)
            assert isinstance(tree.state[11], Recorded)  # the distance metric, recorded too


def test_2021_sklearn_neighbours_pickle_reads():
    """``neighbors.pkl`` written by scikit-learn 1.0.1 / numpy 1.21 (``numpy.core`` names,
    ``sklearn.neighbors._dist_metrics.EuclideanDistance``, a KD tree), as the authors' file."""
    with open(OLD / "neighbors.pkl", "rb") as f:
        got = load_data_pickle(f, "neighbors.pkl")
    assert got.qualname == "sklearn.neighbors._unsupervised.NearestNeighbors"
    assert got.state["_sklearn_version"] == "1.0.1"
    assert got.state["_fit_X"].shape == (10, 136)
    assert got.state["_tree"].qualname == "sklearn.neighbors._kd_tree.KDTree"
    assert got.state["_tree"].state[11].qualname == "sklearn.neighbors._dist_metrics.EuclideanDistance"
