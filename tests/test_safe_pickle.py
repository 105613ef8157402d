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


def _np_global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


@pytest.mark.parametrize("pkg", ["numpy.core", "numpy._core"])
def test_numpy_calls_that_allocate_from_a_few_bytes_are_refused(pkg):
    # numpy.ndarray(shape, dtype, buffer, offset, strides): a 4.8 GB zero-stride view of 8 bytes
    view = pickle.dumps(_Evil(np.ndarray, (2_000_000, 300), "f8", b"\0" * 8, 0, (0, 0)), protocol=2)
    with pytest.raises(UnsafeCheckpointError, match=r"test\.pkl: refused: .*numpy\.ndarray"):
        _load(view)
    # _reconstruct(ndarray, shape, typecode) with elements: uninitialised memory (4e9 in the review)
    recon = _np_global(f"{pkg}.multiarray", "_reconstruct")
    big = b"\x80\x02" + recon + _np_global("numpy", "ndarray") + b"M\xe8\x03\x85C\x01u\x87R."  # (1000,)
    with pytest.raises(UnsafeCheckpointError, match=r"test\.pkl: refused: .*shape \(1000,\)"):
        _load(big)
    not_ndarray = b"\x80\x02" + recon + _np_global("numpy", "dtype") + b"K\x00\x85C\x01b\x87R."
    with pytest.raises(UnsafeCheckpointError, match="not an ndarray"):
        _load(not_ndarray)


def test_real_numpy_pickles_still_read():
    arrays = {"f": np.arange(12, dtype=np.float32).reshape(3, 4), "fortran": np.asfortranarray(np.ones((2, 3))),
              "empty": np.zeros((0, 5)), "scalar0d": np.array(3.5), "obj": np.array([1, "a", None], dtype=object),
              "rec": np.zeros(2, dtype=[("x", "<i4"), ("y", ">f8")]), "view": np.arange(10)[::3]}
    for protocol in (2, 3, 4, 5):
        data = pickle.dumps(arrays, protocol=protocol)
        renamed = data.replace(b"numpy._core", b"numpy.core") if protocol < 4 else data  # GLOBAL is text there
        for blob in (data, renamed):  # numpy 2.x and 1.x names
            got = _load(blob)
            for name, want in arrays.items():
                assert got[name].dtype == want.dtype and got[name].shape == want.shape, (protocol, name)
                assert got[name].tolist() == want.tolist(), (protocol, name)


def _build_on(module: str, name: str, attr: str, value: bytes) -> bytes:
    """A pickle that takes a global and BUILDs ``(None, {attr: value})`` on it (setattr)."""
    key = attr.encode()
    return (b"\x80\x02" + _np_global(module, name) + b"N}X" + len(key).to_bytes(4, "little") + key
            + value + b"s\x86b.")


def test_build_on_an_allowed_global_does_not_reach_the_next_load():
    from illustpose.retrieval.safe_pickle import DATA_ALLOWED

    # the review's case: _codecs.encode's default encoding set to rot13 for every later load
    encode = DATA_ALLOWED[("_codecs", "encode")]
    defaults = encode.__defaults__
    try:
        rot13 = _build_on("_codecs", "encode", "__defaults__", b"X\x05\x00\x00\x00rot13\x85")
        with pytest.raises(CheckpointError):
            _load(rot13)
        assert encode.__defaults__ == defaults
        # every kind of allowed global: functions, stand-in classes, markers, C functions and types
        for module, name in DATA_ALLOWED:
            try:
                _load(_build_on(module, name, "zz_changed", b"K\x01"))
            except CheckpointError:
                pass
        changed = [key for key, obj in DATA_ALLOWED.items() if hasattr(obj, "zz_changed")]
        assert changed == []
    finally:
        encode.__defaults__ = defaults
        for obj in DATA_ALLOWED.values():
            if "zz_changed" in getattr(obj, "__dict__", {}):
                delattr(obj, "zz_changed")
    assert _load([b"hi\xff", b""], protocol=2) == [b"hi\xff", b""]  # _codecs.encode and bytes()


def test_stand_in_classes_are_made_per_load():
    neighbors = pytest.importorskip("sklearn.neighbors")
    from illustpose.retrieval.safe_pickle import DATA_ALLOWED

    data = pickle.dumps([neighbors.NearestNeighbors(), neighbors.NearestNeighbors()])
    first, second = _load(data), _load(data)
    assert type(first[0]) is type(first[1]) and type(first[0]) is not type(second[0])
    shared = DATA_ALLOWED[("sklearn.neighbors._unsupervised", "NearestNeighbors")]
    assert type(first[0]) is not shared and isinstance(first[0], shared) and isinstance(first[0], Recorded)
    assert first[0].qualname == "sklearn.neighbors._unsupervised.NearestNeighbors"


def test_encoding_names_are_compared_without_a_codec_lookup():
    import codecs

    asked = []

    def search(name):
        asked.append(name)
        return None

    codecs.register(search)
    try:
        probe = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x10\x00\x00\x00illustpose_probe\x86R."
        with pytest.raises(UnsafeCheckpointError, match="illustpose_probe"):
            _load(probe)
        for spelling in ("latin1", "LATIN-1", "iso-8859-1", "ISO8859-1", "l1"):
            blob = b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00\xc3\xbfX" + bytes([len(spelling), 0, 0, 0]) \
                + spelling.encode() + b"\x86R."
            assert _load(blob) == b"\xff"
    finally:
        codecs.unregister(search)
    assert asked == []
