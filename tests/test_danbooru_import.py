"""``index import-danbooru``: the authors' support files as the reference builds and searches them.

The files are made as the authors made theirs (scikit-learn ``NearestNeighbors`` fitted on
``pdist`` descriptors of crop-frame keypoints, pickled; a post id collection; a CSV), and every
query is compared with scikit-learn's own ``kneighbors`` on the same object.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from illustpose import cli as main_cli
from illustpose.keypoints import flip_permutation
from illustpose.retrieval import PoseIndex, PoseKeypoints
from illustpose.retrieval.danbooru import FULL_BODY, INTENTLY, NEIGHBORS, post_url

neighbors_mod = pytest.importorskip("sklearn.neighbors")
pdist = pytest.importorskip("scipy.spatial.distance").pdist
OLD = Path(__file__).parent / "data" / "danbooru_sklearn_1_0_1"


def reference_descriptor(kps_rc: np.ndarray, bbox) -> np.ndarray:
    """``pdist(cropbox_points(kps, *cb))`` of the reference: bbox ``[(row0, col0), (h, w)]`` ->
    a ``1.1 * max(h, w)`` square centred on it -> 256 px (the closed form of its cropbox)."""
    (r0, c0), (h, w) = bbox
    m = max(h, w)
    corner = np.array([r0 + (0 if h >= w else -((w - h) // 2)), c0 + (-((h - w) // 2) if h >= w else 0)]) - 0.05 * m
    return pdist((kps_rc - corner) * 256 / (1.1 * m))


def make_poses(n: int, seed: int):
    rng = np.random.default_rng(seed)
    poses = []
    for _ in range(n):
        r0, c0 = rng.integers(0, 200, 2)
        h, w = rng.integers(80, 400, 2)
        kps = np.stack([rng.uniform(r0, r0 + h, 25), rng.uniform(c0, c0 + w, 25)], axis=1)
        poses.append((kps, [(int(r0), int(c0)), (int(h), int(w))]))
    return poses


def query_pose(kps_rc, bbox, joints=25) -> PoseKeypoints:
    (r0, c0), (h, w) = bbox
    return PoseKeypoints.create(kps_rc[:joints, ::-1], (c0, r0, w, h))


def write_release(folder: Path, poses, post_ids, *, algorithm="auto", protocol=4, joints=25):
    """The three files at their release paths; rows are the sorted ids, as the reference reads them."""
    x = np.stack([reference_descriptor(k[:joints], b) for k, b in poses])
    fitted = neighbors_mod.NearestNeighbors(n_neighbors=5, algorithm=algorithm).fit(x)
    for rel, data in ((NEIGHBORS, pickle.dumps(fitted, protocol=protocol)),
                      (FULL_BODY, pickle.dumps(list(post_ids) + [123456789], protocol=protocol)),
                      (INTENTLY, ("\n".join(map(str, [*post_ids[::-1], 5, 6])) + "\n").encode())):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return fitted


def zip_folder(folder: Path, out: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(out, "w") as z:
        for p in folder.rglob("*"):
            if p.is_file():
                z.write(p, prefix + str(p.relative_to(folder)))
    return out


def run(*argv) -> int:
    return main_cli.main(["index", *argv])


def check_like_sklearn(index_path: Path, fitted, poses_q, post_ids, joints=25, k=5):
    with PoseIndex(index_path) as index:
        for kps, bbox in poses_q:
            want_d, want_i = fitted.kneighbors(reference_descriptor(kps[:joints], bbox)[None], k)
            hits = index.query(query_pose(kps, bbox, joints), k)
            assert [h.id - 1 for h in hits] == want_i[0].tolist()
            assert [h.source for h in hits] == [post_url(post_ids[i]) for i in want_i[0]]
            np.testing.assert_allclose([h.distance for h in hits], want_d[0], rtol=2e-6)


@pytest.mark.parametrize("algorithm, protocol, as_zip", [("auto", 4, True), ("kd_tree", 5, False),
                                                          ("ball_tree", 2, True)])
def test_import_answers_like_sklearn_kneighbors(tmp_path, algorithm, protocol, as_zip):
    poses = make_poses(300, 1)
    post_ids = sorted(np.random.default_rng(2).choice(10**7, 300, replace=False).tolist())
    fitted = write_release(tmp_path / "release", poses, post_ids, algorithm=algorithm, protocol=protocol)
    source = zip_folder(tmp_path / "release", tmp_path / "bizarre_pose_models.zip", "bizarre_pose_models/") \
        if as_zip else tmp_path / "release"
    dest = tmp_path / "danbooru.sqlite"
    assert run("import-danbooru", str(dest), "--from", str(source)) == 0
    with PoseIndex(dest) as index:
        assert len(index) == 300 and index.kind.name == "all25"
        assert index.model["n_neighbors"] == 5 and index.get(1).pose is None
    check_like_sklearn(dest, fitted, make_poses(20, 3) + poses[:3], post_ids)
    assert run("import-danbooru", str(dest), "--from", str(source)) == 0  # again: nothing new
    assert len(PoseIndex(dest)) == 300


def test_2021_files_import_and_answer_as_sklearn_1_0_1(tmp_path, capsys):
    """The fixture was written by scikit-learn 1.0.1 / numpy 1.21 (KD tree, 136-D, a set in
    full_body.pkl); expected.npz holds that version's own kneighbors answers."""
    dest = tmp_path / "old.sqlite"
    assert run("import-danbooru", str(dest), "--from", str(OLD)) == 0
    expected = np.load(OLD / "expected.npz")
    with PoseIndex(dest) as index:
        assert index.kind.name == "coco17" and len(index) == 10
        rows = [int(index.get(i).tags["danbooru_id"]) for i in range(1, 11)]
        for q, want_d, want_i in zip(expected["queries"], expected["distances"], expected["indices"]):
            found = index._sync().search(q.astype(np.float32), (1 << 17) - 1, 3)
            assert (found.ids - 1).tolist() == want_i.tolist()
            np.testing.assert_allclose(found.distances, want_d, rtol=2e-6)
    assert rows == sorted(rows)
    capsys.readouterr()
    # query --json of a pose file carries mirrored, the post id and its link; k defaults to n_neighbors
    pose_file = tmp_path / "q.json"
    ann = {"keypoints": [v for x, y in np.random.default_rng(4).uniform(0, 300, (17, 2)) for v in (x, y, 2)],
           "bbox": [0, 0, 300, 300]}
    pose_file.write_text(json.dumps({"annotations": [ann], "images": [{"id": 1}], "categories": []}))
    assert run("query", str(dest), str(pose_file), "--json", "--mirror") == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3 and {"rank", "distance", "source", "mirrored", "danbooru_id", "link"} <= set(hits[0])
    assert hits[0]["link"] == hits[0]["source"] == post_url(hits[0]["danbooru_id"])


def test_mirror_and_partial_queries_work_on_link_only_entries(tmp_path):
    poses = make_poses(50, 5)
    post_ids = list(range(1000, 1050))
    write_release(tmp_path / "r", poses, post_ids)
    dest = tmp_path / "d.sqlite"
    assert run("import-danbooru", str(dest), "--from", str(tmp_path / "r")) == 0
    kps, ((r0, c0), (h, w)) = poses[7]
    flip = flip_permutation(25)
    mirrored = np.stack([kps[flip, 0], 1000 - kps[flip, 1]], axis=1)  # col -> 1000 - col, left <-> right
    with PoseIndex(dest) as index:
        hit = index.query(query_pose(mirrored, [(r0, 1000 - c0 - w), (h, w)]), 1, mirror=True)[0]
        assert hit.id == 8 and hit.mirrored and hit.distance < 1e-3
        partial = index.query(query_pose(kps, [(r0, c0), (h, w)], joints=17), 1)[0]  # COCO-17 on a 25-joint set
        assert partial.id == 8 and partial.distance < 1e-3


def write_raw_zip(path: Path, poses, post_ids, evil=None) -> Path:
    """raw_retrieval_support.zip as issue #4 describes it: pickles of dicts of raw model outputs."""
    half = len(poses) // 2
    with zipfile.ZipFile(path, "w") as z:
        for n, part in enumerate((slice(0, half), slice(half, None))):
            records = {pid: {"keypoints": kps, "bbox": bbox, "cropbox": None, "segmentation_output": {"bbox": bbox}}
                       for pid, (kps, bbox) in zip(post_ids[part], poses[part])}
            if evil is not None and n == 1:
                records[post_ids[-1]]["out"] = evil
            z.writestr(f"raw_retrieval_support/part{n}.pkl", pickle.dumps(records, protocol=4))
    return path


@pytest.mark.parametrize("kind, joints", [("all25", 25), ("coco17", 17)])
def test_raw_support_rebuilds_descriptors_of_any_kind(tmp_path, kind, joints):
    poses = make_poses(120, 6)
    post_ids = sorted(np.random.default_rng(7).choice(10**6, 120, replace=False).tolist())
    order = np.random.default_rng(8).permutation(120)  # the zip is not in id order
    raw = write_raw_zip(tmp_path / "raw_retrieval_support.zip", [poses[i] for i in order],
                        [post_ids[i] for i in order])
    x = np.stack([reference_descriptor(k[:joints], b) for k, b in poses])
    fitted = neighbors_mod.NearestNeighbors(n_neighbors=5).fit(x)
    dest = tmp_path / f"raw_{kind}.sqlite"
    assert run("import-danbooru", str(dest), "--from", str(raw), "--kind", kind) == 0
    with PoseIndex(dest) as index:
        assert index.kind.name == kind and index.get(1).pose is not None
    check_like_sklearn(dest, fitted, make_poses(10, 9), post_ids, joints)


class _Evil:
    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        return os.system, self.args


@pytest.mark.parametrize("place", ["neighbors", "full_body", "raw"])
def test_malicious_pickles_are_refused_in_each_place(tmp_path, capsys, place):
    sentinel = tmp_path / "ran"
    poses, post_ids = make_poses(20, 10), list(range(20))
    if place == "raw":
        source = write_raw_zip(tmp_path / "raw.zip", poses, post_ids, evil=_Evil(f"touch {sentinel}"))
    else:
        write_release(tmp_path / "r", poses, post_ids)
        target = tmp_path / "r" / (NEIGHBORS if place == "neighbors" else FULL_BODY)
        target.write_bytes(pickle.dumps({"x": [_Evil(f"touch {sentinel}")]}))
        source = zip_folder(tmp_path / "r", tmp_path / "models.zip")
    dest = tmp_path / "d.sqlite"
    assert run("import-danbooru", str(dest), "--from", str(source)) == 2
    err = capsys.readouterr().err
    assert "system" in err and "Nothing was executed" in err and len(err.strip().splitlines()) == 1
    assert not sentinel.exists() and not dest.exists()


def test_bad_release_files_are_clear_errors(tmp_path, capsys):
    poses, post_ids = make_poses(20, 11), list(range(100, 120))
    write_release(tmp_path / "r", poses, post_ids)
    (tmp_path / "r" / INTENTLY).write_text("100\n101\n")  # fewer ids than rows
    assert run("import-danbooru", str(tmp_path / "d.sqlite"), "--from", str(tmp_path / "r")) == 2
    assert "2 post ids for the 20 rows" in capsys.readouterr().err
    manhattan = neighbors_mod.NearestNeighbors(metric="manhattan").fit(np.ones((20, 300)))
    write_release(tmp_path / "r", poses, post_ids)
    (tmp_path / "r" / NEIGHBORS).write_bytes(pickle.dumps(manhattan))
    assert run("import-danbooru", str(tmp_path / "d.sqlite"), "--from", str(tmp_path / "r")) == 2
    assert "manhattan" in capsys.readouterr().err
    assert run("import-danbooru", str(tmp_path / "d.sqlite"), "--from", str(tmp_path / "nothing")) == 2
    assert "no such file" in capsys.readouterr().err


def test_without_from_the_cached_release_zip_is_used_or_the_user_is_told(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert run("import-danbooru", str(tmp_path / "d.sqlite")) == 2
    assert "--from" in capsys.readouterr().err
    write_release(tmp_path / "r", make_poses(12, 12), list(range(12)))
    zip_folder(tmp_path / "r", (tmp_path / "cache" / "illustpose").mkdir(parents=True) or
               tmp_path / "cache" / "illustpose" / "bizarre_pose_models.zip")
    assert run("import-danbooru", str(tmp_path / "d.sqlite")) == 0
    assert len(PoseIndex(tmp_path / "d.sqlite")) == 12


def test_zip_bombs_and_oversized_members_are_refused_before_reading(tmp_path, monkeypatch, capsys):
    from illustpose.retrieval import danbooru

    bomb = tmp_path / "raw_retrieval_support.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:  # 2 MiB of zeros: about 1000:1
        z.writestr("raw/part0.pkl", pickle.dumps({1: b"\0" * (2 << 20)}))
    assert run("import-danbooru", str(tmp_path / "d.sqlite"), "--from", str(bomb)) == 2
    err = capsys.readouterr().err
    assert "zip bomb" in err and "part0.pkl" in err and len(err.strip().splitlines()) == 1
    write_release(tmp_path / "r", make_poses(12, 13), list(range(12)))
    release = zip_folder(tmp_path / "r", tmp_path / "models.zip")
    with zipfile.ZipFile(release) as z:
        sizes = {Path(i.filename).name: i.file_size for i in z.infolist()}
    monkeypatch.setattr(danbooru, "MAX_MEMBER_BYTES", sizes["neighbors.pkl"] - 1)
    assert run("import-danbooru", str(tmp_path / "d.sqlite"), "--from", str(release)) == 2
    err = capsys.readouterr().err
    assert "neighbors.pkl: the zip says it unpacks to" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(danbooru, "MAX_MEMBER_BYTES", 8 << 30)
    monkeypatch.setattr(danbooru, "MAX_TOTAL_BYTES", sizes["neighbors.pkl"] + sizes["full_body.pkl"] - 1)
    assert run("import-danbooru", str(tmp_path / "d.sqlite"), "--from", str(release)) == 2
    assert "full_body.pkl: the zip says" in capsys.readouterr().err
    monkeypatch.setattr(danbooru, "MAX_TOTAL_BYTES", sum(sizes.values()))
    assert run("import-danbooru", str(tmp_path / "d.sqlite"), "--from", str(release)) == 0


def test_odd_keys_and_metric_settings_are_one_line_errors(tmp_path):
    from illustpose.errors import PoseIndexError
    from illustpose.retrieval.danbooru import open_support, read_neighbors
    from illustpose.retrieval.safe_pickle import Recorded

    raw = tmp_path / "raw.zip"
    (kps, bbox), = make_poses(1, 14)
    with zipfile.ZipFile(raw, "w") as z:
        z.writestr("part0.pkl", pickle.dumps({"\u00b2": {"keypoints": kps, "bbox": bbox}}))  # '²'.isdigit()
    with pytest.raises(PoseIndexError, match="expected post ids as keys"):
        open_support(raw)
    fitted = type("NearestNeighbors", (Recorded,), {"qualname": "sklearn.neighbors.NearestNeighbors"})
    x = np.ones((3, 300))
    for state, match in (({"effective_metric_": np.array(["euclidean", "l2"])}, "metric array"),
                         ({"effective_metric_": "minkowski", "p": np.array([2, 2])}, "p=array"),
                         ({"effective_metric_": "minkowski", "effective_metric_params_": [("p", 2)]}, "not a dict"),
                         ({"effective_metric_": "minkowski", "effective_metric_params_": np.ones(2)}, "not a dict")):
        obj = fitted()
        obj.state = {"_fit_X": x, **state}
        with pytest.raises(PoseIndexError, match=match) as err:
            read_neighbors(obj, "neighbors.pkl")
        assert "\n" not in str(err.value)
    obj = fitted()
    obj.state = {"_fit_X": x, "effective_metric_": "minkowski", "effective_metric_params_": {"p": np.float64(2.0)}}
    assert read_neighbors(obj, "neighbors.pkl").fit_x.shape == (3, 300)


def test_a_release_zip_is_not_hashed_again_when_its_hash_is_recorded(tmp_path):
    from illustpose.retrieval.danbooru import open_support
    from illustpose.weights import _record

    write_release(tmp_path / "r", make_poses(12, 15), list(range(12)))
    release = zip_folder(tmp_path / "r", tmp_path / "bizarre_pose_models.zip")
    _record(tmp_path, release, "f" * 64, source="test", pinned=None, status="recorded")
    assert open_support(release).model["sha256"] == "f" * 64


def test_one_rule_says_which_entries_are_danbooru_posts(tmp_path):
    from types import SimpleNamespace

    from illustpose.retrieval.danbooru import post_id
    from illustpose.retrieval.preview import link_card, result_picture

    assert post_id({"danbooru_id": 42}) == 42
    assert [post_id(t) for t in ({"danbooru_id": True}, {"danbooru_id": "42"}, {}, None, [42])] == [None] * 5
    card, problem = result_picture(SimpleNamespace(tags={"danbooru_id": 42}, source=""), 64)
    assert problem is None and np.array_equal(card, link_card(42, 64))
    _, problem = result_picture(SimpleNamespace(tags={"danbooru_id": True}, source=str(tmp_path / "no.png")), 64)
    assert problem is not None  # not a post: its (missing) picture is shown instead
