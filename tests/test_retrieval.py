"""Tests of illustpose.retrieval: descriptor fidelity, exact search, the SQLite store, bad input."""

from __future__ import annotations

import json
import sqlite3
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import pdist

from illustpose.errors import IllustposeError, PoseIndexError
from illustpose.geometry import bbox_xywh_to_rc, crop_frame_points, cropbox_points, pose_cropbox, xy_to_rc
from illustpose.keypoints import KeypointError, flip_permutation
from illustpose.registry import POSE_CROP_PADDING, POSE_CROP_SIZE
from illustpose.retrieval import (
    DESCRIPTOR_KINDS,
    DescriptorSearch,
    IndexEntry,
    PoseIndex,
    PoseKeypoints,
    mirror_descriptors,
    pair_mask,
    pose_descriptors,
)
from illustpose.retrieval import search as search_module
from illustpose.retrieval.store import APPLICATION_ID
from retrieval_poses import entries, random_poses

ALL25, COCO17 = DESCRIPTOR_KINDS["all25"], DESCRIPTOR_KINDS["coco17"]


def reference_descriptor(xy: np.ndarray, bbox_xywh, joints: int = 25) -> np.ndarray:
    """The reference's ``pdist(cropbox_points(keypoints, *cropbox))`` through illustpose.geometry."""
    cb = pose_cropbox(bbox_xywh_to_rc(bbox_xywh), POSE_CROP_SIZE, POSE_CROP_PADDING)
    return pdist(cropbox_points(xy_to_rc(xy[:joints]), cb))


def full_search(n: int, seed: int = 0, kind=ALL25) -> tuple[DescriptorSearch, np.ndarray]:
    xy, bbox = random_poses(n, seed)
    desc = pose_descriptors(xy, bbox, kind)
    s = DescriptorSearch(kind)
    s.add(np.arange(1, n + 1), desc, np.full(n, kind.full_mask))
    return s, desc


def brute(desc: np.ndarray, q: np.ndarray, cols=None) -> np.ndarray:
    """float64 renormalised distances of every row, computed the obvious way."""
    cols = np.arange(desc.shape[1]) if cols is None else cols
    diff = desc[:, cols].astype(np.float64) - q[cols].astype(np.float64)
    return np.sqrt((diff ** 2).sum(axis=1) * desc.shape[1] / cols.size)


# ----------------------------------------------------------------------------- descriptor


@pytest.mark.parametrize("kind", [ALL25, COCO17])
def test_descriptor_is_scipy_pdist_of_crop_frame_points(kind):
    xy, bbox = random_poses(300, seed=1)
    bbox[::3, 2:] += 0.5  # float bboxes too
    bbox[1::7, 2] = bbox[1::7, 3]  # square
    bbox[2::7, 2] = bbox[2::7, 3] + 1  # odd difference: floor division of a negative
    got64 = pose_descriptors(xy, bbox, kind.name, dtype=np.float64)
    got32 = pose_descriptors(xy, bbox, kind.name)
    assert got64.shape == (300, kind.dims) and got32.dtype == np.float32
    for n in range(300):
        ref = reference_descriptor(xy[n], bbox[n], kind.num_joints)
        np.testing.assert_array_equal(got64[n], ref)  # bit-identical
        np.testing.assert_array_equal(got32[n], ref.astype(np.float32))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 900), st.integers(1, 900), st.integers(-500, 500), st.integers(-500, 500))
def test_descriptor_exact_for_any_bbox(seed, w, h, x, y):
    xy = np.random.default_rng(seed).uniform(-300.0, 1500.0, (25, 2))
    np.testing.assert_array_equal(pose_descriptors(xy, (x, y, w, h), dtype=np.float64),
                                  reference_descriptor(xy, (x, y, w, h)))


def test_descriptor_batch_is_threaded_and_identical():
    xy, bbox = random_poses(20000, seed=2)  # above the threading threshold
    batch = pose_descriptors(xy, bbox)
    one_by_one = np.stack([pose_descriptors(xy[i], bbox[i]) for i in range(0, 20000, 997)])
    np.testing.assert_array_equal(batch[::997], one_by_one)


def test_crop_frame_points_match_geometry():
    xy, bbox = random_poses(50, seed=3)
    got = crop_frame_points(xy, bbox, size=POSE_CROP_SIZE, padding=POSE_CROP_PADDING)
    for n in range(50):
        np.testing.assert_array_equal(got[n], cropbox_points(xy_to_rc(xy[n]), pose_cropbox(bbox_xywh_to_rc(bbox[n]), POSE_CROP_SIZE, POSE_CROP_PADDING)))


@pytest.mark.parametrize("kind", [ALL25, COCO17])
def test_mirror_is_the_descriptor_of_the_flipped_swapped_pose(kind):
    xy, bbox = random_poses(20, seed=4)
    desc = pose_descriptors(xy, bbox, kind, dtype=np.float64)
    perm = list(flip_permutation(kind.num_joints))
    for n in range(20):
        crop = crop_frame_points(xy[n:n + 1, :kind.num_joints], bbox[n:n + 1], size=POSE_CROP_SIZE,
                                 padding=POSE_CROP_PADDING)[0]
        crop[:, 1] = 256.0 - crop[:, 1]  # horizontal flip in the crop frame
        np.testing.assert_allclose(mirror_descriptors(desc[n], kind), pdist(crop[perm]), rtol=1e-12)
    np.testing.assert_array_equal(mirror_descriptors(mirror_descriptors(desc, kind), kind), desc)


def test_mirror_distance_is_symmetric():
    _, desc = full_search(50, seed=5)
    m = mirror_descriptors(desc, ALL25)
    d_qm = np.linalg.norm(desc[0].astype(np.float64) - m.astype(np.float64), axis=1)
    d_mq = np.linalg.norm(m[0].astype(np.float64) - desc.astype(np.float64), axis=1)
    np.testing.assert_allclose(d_qm, d_mq, rtol=1e-12)


def test_absent_joints_give_nan_pairs_exactly_where_pair_mask_is_false():
    xy, bbox = random_poses(1, seed=6)
    present = np.ones(25, bool)
    present[[3, 10, 24]] = False
    pose = PoseKeypoints.create(xy[0], bbox[0], present=present)
    d = pose_descriptors(pose.keypoints, pose.bbox_xywh)
    np.testing.assert_array_equal(np.isfinite(d), pair_mask(present))
    assert pair_mask(present).sum() == 22 * 21 // 2


def test_pose_keypoints_validation():
    xy, bbox = random_poses(1, seed=7)
    with pytest.raises(KeypointError, match=r"\(17, 2\) or \(25, 2\)"):
        PoseKeypoints.create(xy[0, :10], bbox[0])
    bad = xy[0].copy()
    bad[4] = np.nan
    with pytest.raises(KeypointError, match=r"present joints \[4\]"):
        PoseKeypoints.create(bad, bbox[0])
    assert not PoseKeypoints.create(bad, bbox[0], present=np.arange(25) != 4).present[4]
    with pytest.raises(KeypointError, match="w > 0 and h > 0"):
        PoseKeypoints.create(xy[0], (0, 0, 0, 10))
    with pytest.raises(KeypointError, match="no present joint"):
        PoseKeypoints.create(xy[0], bbox[0], present=np.zeros(25, bool))
    with pytest.raises(KeypointError, match="bbox_xywh must be numbers"):
        PoseKeypoints.from_coco_annotation({"keypoints": [1.0, 2.0, 2] * 17, "bbox": "wide"})
    coco = PoseKeypoints.create(xy[0, :17], bbox[0])
    assert coco.present.sum() == 17 and np.isnan(coco.keypoints[17:]).all()
    assert coco.content_hash() == PoseKeypoints.create(xy[0, :17], bbox[0]).content_hash()
    assert coco.content_hash() != PoseKeypoints.create(xy[0, :17], bbox[0] + 1).content_hash()


# ----------------------------------------------------------------------------- search


@pytest.fixture
def small_bound(monkeypatch):
    """Use the projection bound from 500 complete poses on, so small tests exercise it."""
    monkeypatch.setattr(search_module, "BOUND_MIN_ROWS", 500)


@pytest.mark.parametrize("bound", [False, True])
def test_neighbours_identical_to_sklearn(bound, monkeypatch):
    neighbors = pytest.importorskip("sklearn.neighbors")
    monkeypatch.setattr(search_module, "BOUND_MIN_ROWS", 500 if bound else 10**9)
    s, desc = full_search(6000, seed=8)
    nn = neighbors.NearestNeighbors(n_neighbors=10, algorithm="brute").fit(desc.astype(np.float64))
    xq, bq = random_poses(40, seed=9)
    queries = pose_descriptors(xq, bq)
    dist, idx = nn.kneighbors(queries.astype(np.float64))
    for qi, q in enumerate(queries):
        got = s.search(q, ALL25.full_mask, 10)
        np.testing.assert_array_equal(got.ids, idx[qi] + 1)
        np.testing.assert_allclose(got.distances, dist[qi], rtol=1e-9)
    assert (ALL25.full_mask in s._groups[ALL25.full_mask].bounds) == bound


def test_mirror_search_keeps_the_best_of_both(small_bound):
    neighbors = pytest.importorskip("sklearn.neighbors")
    s, desc = full_search(3000, seed=10)
    nn = neighbors.NearestNeighbors(algorithm="brute").fit(desc.astype(np.float64))
    xq, bq = random_poses(20, seed=11)
    for q in pose_descriptors(xq, bq):
        d = np.concatenate([nn.kneighbors(v[None].astype(np.float64), 10)[0][0] for v in (q, mirror_descriptors(q))])
        i = np.concatenate([nn.kneighbors(v[None].astype(np.float64), 10)[1][0] for v in (q, mirror_descriptors(q))])
        best = {}
        for dd, ii, flag in zip(d, i, [False] * 10 + [True] * 10):
            if ii not in best or dd < best[ii][0]:
                best[ii] = (dd, flag)
        expect = sorted(best.items(), key=lambda kv: kv[1][0])[:10]
        got = s.search(q, ALL25.full_mask, 10, mirror=True)
        np.testing.assert_array_equal(got.ids, [ii + 1 for ii, _ in expect])
        np.testing.assert_array_equal(got.mirrored, [flag for _, (_, flag) in expect])
    # a mirrored copy of an entry is found at distance 0 only with mirror=True
    mq = mirror_descriptors(desc[123])
    assert s.search(mq, ALL25.full_mask, 1, mirror=True).distances[0] == 0.0
    assert s.search(mq, ALL25.full_mask, 1).distances[0] > 0.0


def test_partial_query_renormalises_over_present_pairs():
    s, desc = full_search(800, seed=12)
    xq, bq = random_poses(1, seed=13)
    present = np.ones(25, bool)
    present[[0, 5, 9, 20, 21, 22, 23, 24]] = False
    pose = PoseKeypoints.create(xq[0], bq[0], present=present)
    q = pose_descriptors(pose.keypoints, pose.bbox_xywh)
    mask = int(np.dot(present, 1 << np.arange(25)))
    cols = np.flatnonzero(pair_mask(present))
    expected = brute(desc, q, cols)  # sqrt(D / |P| * sum over present pairs)
    got = s.search(q, mask, 800)
    order = np.lexsort((np.arange(1, 801), expected))
    np.testing.assert_array_equal(got.ids, order + 1)
    np.testing.assert_allclose(got.distances, expected[order], rtol=1e-12)
    # a complete query restricted to the same joints scores the same as the partial one
    full_q = pose_descriptors(xq[0], bq[0])
    np.testing.assert_allclose(brute(desc, full_q, cols), expected, rtol=1e-6)
    with pytest.raises(PoseIndexError, match="partial matching is off"):
        s.search(q, mask, 5, partial=False)


def test_repeated_partial_query_gets_its_own_bound(small_bound):
    s, desc = full_search(3000, seed=23)
    cols17 = np.flatnonzero(pair_mask(np.arange(25) < 17))
    group = s._groups[ALL25.full_mask]
    for n, q in enumerate(pose_descriptors(*random_poses(6, seed=24))):
        expected = brute(desc, q, cols17)
        order = np.lexsort((np.arange(1, 3001), expected))[:10]
        got = s.search(q, (1 << 17) - 1, 10, mirror=n % 2 == 1)
        if n % 2 == 0:
            np.testing.assert_array_equal(got.ids, order + 1)
            np.testing.assert_allclose(got.distances, expected[order], rtol=1e-12)
        assert ((1 << 17) - 1 in group.bounds) == (n >= 1)  # scanned once, bounded from the 2nd use


def test_bounds_and_scans_agree_on_random_masks_with_mirror(monkeypatch):
    s, _ = full_search(2500, seed=25)
    rng = np.random.default_rng(26)
    queries = pose_descriptors(*random_poses(8, seed=27))
    masks = [ALL25.full_mask] + [int(np.dot(rng.random(25) < 0.7, 1 << np.arange(25))) for _ in range(7)]
    scanned = [s.search(q, m, 7, mirror=True) for q, m in zip(queries, masks)]
    monkeypatch.setattr(search_module, "BOUND_MIN_ROWS", 100)
    for _ in range(2):  # the second round uses the partial bounds built by the first
        for q, m, ref in zip(queries, masks, scanned):
            got = s.search(q, m, 7, mirror=True)
            np.testing.assert_array_equal(got.ids, ref.ids)
            np.testing.assert_array_equal(got.mirrored, ref.mirrored)
            np.testing.assert_allclose(got.distances, ref.distances, rtol=1e-12)
    assert len(s._groups[ALL25.full_mask].bounds) == 1 + search_module._PARTIAL_BOUNDS


def test_partial_entries_are_compared_over_shared_joints(small_bound):
    s, desc = full_search(1000, seed=14)
    xy, bbox = random_poses(200, seed=15)
    coco = pose_descriptors(np.concatenate([xy[:, :17], np.full((200, 8, 2), np.nan)], axis=1), bbox)
    s.add(np.arange(2001, 2201), coco, np.full(200, (1 << 17) - 1))
    q = pose_descriptors(*random_poses(1, seed=16))[0]
    cols17 = np.flatnonzero(pair_mask(np.arange(25) < 17))
    expected = np.concatenate([brute(desc, q), brute(coco, q, cols17)])
    ids = np.concatenate([np.arange(1, 1001), np.arange(2001, 2201)])
    order = np.lexsort((ids, expected))[:25]
    got = s.search(q, ALL25.full_mask, 25)
    np.testing.assert_array_equal(got.ids, ids[order])
    np.testing.assert_allclose(got.distances, expected[order], rtol=1e-12)
    # entries sharing fewer than min_joints joints with the query are left out
    complete_only = s.search(q, ALL25.full_mask, 5000, min_joints=18)
    assert sorted(complete_only.ids.tolist()) == list(range(1, 1001))


def test_search_edge_cases():
    s, _ = full_search(30, seed=17)
    q = pose_descriptors(*random_poses(1, seed=18))[0]
    everything = s.search(q, ALL25.full_mask, 1000)
    assert everything.ids.size == 30 and np.all(np.diff(everything.distances) >= 0)
    with pytest.raises(PoseIndexError, match="3 usable joints"):
        s.search(q, 0b111, 5)
    with pytest.raises(PoseIndexError, match="k must be >= 1"):
        s.search(q, ALL25.full_mask, 0)
    with pytest.raises(PoseIndexError, match="min_joints >= 2"):
        s.search(q, ALL25.full_mask, 3, min_joints=1)
    with pytest.raises(PoseIndexError, match="empty"):
        DescriptorSearch(ALL25).search(q, ALL25.full_mask, 3)
    with pytest.raises(PoseIndexError, match="300 values"):
        s.search(q[:136], ALL25.full_mask, 3)


def test_incremental_add_refits_the_bound(small_bound):
    s, desc = full_search(600, seed=19)
    q = desc[0]
    assert s.search(q, ALL25.full_mask, 1).ids.tolist() == [1]
    bound = s._groups[ALL25.full_mask].bounds[ALL25.full_mask]
    xy, bbox = random_poses(1000, seed=20)
    more = pose_descriptors(xy, bbox)
    more[500] = q  # an exact copy arrives later
    s.add(np.arange(10001, 11001), more, np.full(1000, ALL25.full_mask))
    got = s.search(q, ALL25.full_mask, 2)
    assert got.ids.tolist() == [1, 10501] and got.distances.tolist() == [0.0, 0.0]
    assert s._groups[ALL25.full_mask].bounds[ALL25.full_mask] is not bound  # grown past 2x: refitted


def test_faiss_backend(small_bound):
    try:
        import faiss  # noqa: F401
    except ImportError:
        with pytest.raises(PoseIndexError, match="pip install faiss-cpu"):
            DescriptorSearch(ALL25, backend="faiss")
        return
    s, desc = full_search(3000, seed=21)
    f = DescriptorSearch(ALL25, backend="faiss")
    f.add(np.arange(1, 3001), desc, np.full(3000, ALL25.full_mask))
    for q in pose_descriptors(*random_poses(10, seed=22)):
        a, b = s.search(q, ALL25.full_mask, 10, mirror=True), f.search(q, ALL25.full_mask, 10, mirror=True)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.distances, b.distances, rtol=1e-12)


def test_unknown_backend():
    with pytest.raises(PoseIndexError, match="expected one of"):
        DescriptorSearch(ALL25, backend="annoy")


# ----------------------------------------------------------------------------- store


@pytest.fixture
def index_path(tmp_path):
    return tmp_path / "refs.sqlite"


def test_add_get_query_info_roundtrip(index_path):
    with PoseIndex(index_path, create=True, model={"pose": "feat_match"}) as index:
        first = index.add(entries(0, 700), batch_size=128)
        assert first.added_ids == list(range(1, 701)) and first.skipped == []
        assert len(index) == 700
        stored = index.get(5)
        expect = next(entries(4, 5))
        assert stored.source == "pose-4" and stored.pose.present.all()
        np.testing.assert_array_equal(stored.pose.keypoints, expect.pose.keypoints)
        assert stored.pose.bbox_xywh == expect.pose.bbox_xywh
        hits = index.query(expect.pose, k=3)
        assert [h.rank for h in hits] == [1, 2, 3] and hits[0].id == 5 and hits[0].distance == 0.0
        assert hits[0].source == "pose-4" and not hits[0].mirrored
        info = index.info()
        assert info["entries"] == 700 and info["descriptor_kind"] == "all25" and info["descriptor_dims"] == 300
        assert info["model"] == {"pose": "feat_match"} and info["format_version"] == 1
    assert sqlite3.connect(index_path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_duplicates_are_skipped_by_content_hash(index_path):
    with PoseIndex(index_path, create=True) as index:
        index.add(entries(0, 10))
        again = index.add(list(entries(5, 15)) + list(entries(12, 13)))
        assert again.skipped == [f"pose-{i}" for i in range(5, 10)] + ["pose-12"]
        assert len(again.added_ids) == 5 and len(index) == 15
        assert len(index.add(entries(0, 3), allow_duplicates=True).added_ids) == 3
        pose = next(entries(0, 1)).pose
        same_file = [IndexEntry(pose, "a.png", sha256="ab" * 32), IndexEntry(pose, "b.png", sha256="ab" * 32)]
        assert index.add(same_file).skipped == ["b.png"]
        assert index.has_content("ab" * 32) and not index.has_content("cd" * 32)


def test_query_sees_entries_added_later_by_this_or_another_handle(index_path):
    with PoseIndex(index_path, create=True) as a, PoseIndex(index_path) as b:
        a.add(entries(0, 50))
        probe = next(entries(60, 61)).pose
        assert a.query(probe, k=1)[0].distance > 0
        b.add(entries(60, 61))
        assert a.query(probe, k=1)[0].distance == 0.0
        a.add([IndexEntry(probe, "again.png", sha256="0" * 64)])
        assert {h.source for h in a.query(probe, k=2)} == {"pose-60", "again.png"}


def test_kind_is_stored_and_mixing_is_refused(index_path):
    with PoseIndex(index_path, create=True, kind="coco17") as index:
        index.add(entries(0, 20))
        assert index.info()["descriptor_dims"] == 136
        pose = next(entries(3, 4)).pose
        assert index.query(pose, k=1)[0].id == 4
    with pytest.raises(PoseIndexError, match="built with the 'coco17' descriptor"):
        PoseIndex(index_path, kind="all25")
    with pytest.raises(PoseIndexError, match="unknown descriptor kind 'body18'"):
        PoseIndex(index_path.with_name("new.sqlite"), create=True, kind="body18")


def test_coco17_query_on_all25_index_is_partial(index_path):
    with PoseIndex(index_path, create=True) as index:
        index.add(entries(0, 100))
        full = next(entries(7, 8)).pose
        coco = PoseKeypoints.create(full.keypoints[:17], full.bbox_xywh)
        assert index.query(coco, k=1)[0].id == 8
        with pytest.raises(PoseIndexError, match="17 of the 25 joints"):
            index.query(coco, k=1, partial=False)


def test_min_joints_and_min_score(index_path):
    with PoseIndex(index_path, create=True) as index:
        index.add(entries(0, 20))
        pose = next(entries(0, 1)).pose
        few = PoseKeypoints.create(pose.keypoints, pose.bbox_xywh, present=np.arange(25) < 4)
        with pytest.raises(PoseIndexError, match="4 usable joints.*min_joints=5"):
            index.query(few, k=3)
        assert index.query(few, k=3, min_joints=4)[0].id == 1
        scored = PoseKeypoints.create(pose.keypoints, pose.bbox_xywh, scores=np.linspace(0, 1, 25))
        with pytest.raises(PoseIndexError, match="usable joints"):
            index.query(scored, k=3, min_score=0.9)
        with pytest.raises(PoseIndexError, match="no joint scores >= 2"):
            index.query(scored, k=3, min_score=2)


def test_empty_index_and_k_larger_than_index(index_path):
    pose = next(entries(0, 1)).pose
    with PoseIndex(index_path, create=True) as index:
        with pytest.raises(PoseIndexError, match="is empty"):
            index.query(pose)
        index.add(entries(0, 4))
        hits = index.query(pose, k=50)
        assert [h.id for h in hits][0] == 1 and len(hits) == 4


def test_missing_file_needs_create(tmp_path):
    with pytest.raises(PoseIndexError, match="no such pose index"):
        PoseIndex(tmp_path / "nope.sqlite")
    assert not (tmp_path / "nope.sqlite").exists()
    with PoseIndex(tmp_path / "sub" / "new.sqlite", create=True) as index:
        assert len(index) == 0
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["new.sqlite"]  # no temp files left


def test_foreign_and_broken_files_are_refused(tmp_path):
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    with pytest.raises(PoseIndexError, match="empty file"):
        PoseIndex(empty)
    text = tmp_path / "notes.sqlite"
    text.write_text("hello")
    with pytest.raises(PoseIndexError, match="not an SQLite database"):
        PoseIndex(text)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE meta (key, value)")
    with pytest.raises(PoseIndexError, match="another application"):
        PoseIndex(foreign)
    no_meta = tmp_path / "nometa.sqlite"
    with sqlite3.connect(no_meta) as c:
        c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        c.execute("CREATE TABLE t (x)")
    with pytest.raises(PoseIndexError, match="no 'meta' table"):
        PoseIndex(no_meta)


def test_newer_format_and_damaged_metadata(index_path):
    PoseIndex(index_path, create=True).close()
    with sqlite3.connect(index_path) as c:
        c.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    with pytest.raises(PoseIndexError, match="format 99.*upgrade illustpose"):
        PoseIndex(index_path)
    with sqlite3.connect(index_path) as c:
        c.execute("UPDATE meta SET value = '1' WHERE key = 'format_version'")
        c.execute("UPDATE meta SET value = '12' WHERE key = 'descriptor_dims'")
    with pytest.raises(PoseIndexError, match="descriptor_dims 12"):
        PoseIndex(index_path)


def test_corrupt_file_gives_a_clear_error(index_path):
    with PoseIndex(index_path, create=True) as index:
        index.add(entries(0, 400))
    data = bytearray(index_path.read_bytes())
    page = 4096
    for at in range(2 * page, len(data), page):  # keep the header and meta, wreck every later page
        data[at:at + page] = b"\xa5" * min(page, len(data) - at)
    index_path.write_bytes(bytes(data))
    with pytest.raises(PoseIndexError, match="corrupt"):
        with PoseIndex(index_path) as index:
            index.query(next(entries(0, 1)).pose)


def test_damaged_descriptor_blob_is_named(index_path):
    with PoseIndex(index_path, create=True) as index:
        index.add(entries(0, 5))
    with sqlite3.connect(index_path) as c:
        c.execute("UPDATE entries SET descriptor = x'00' WHERE id = 3")
    with PoseIndex(index_path) as index, pytest.raises(PoseIndexError, match="entry 3 has a damaged descriptor"):
        index.query(next(entries(0, 1)).pose)


def test_bad_entries_are_refused_and_earlier_batches_kept(index_path):
    good = list(entries(0, 6))
    with PoseIndex(index_path, create=True) as index:
        with pytest.raises(PoseIndexError, match="entry 6: expected an IndexEntry"):
            index.add(good + ["not an entry"], batch_size=3)
        assert len(index) == 6
        pose = good[0].pose
        with pytest.raises(PoseIndexError, match="sha256 must be 64 lowercase hex"):
            index.add([IndexEntry(pose, "x.png", sha256="xyz")])
        with pytest.raises(PoseIndexError, match="tags must be a JSON-serialisable"):
            index.add([IndexEntry(pose, "x.png", sha256="1" * 64, tags={"a": object()})])
        with pytest.raises(PoseIndexError, match="image_size_hw"):
            index.add([IndexEntry(pose, "x.png", sha256="1" * 64, image_size_hw=(0, 5))])
        with pytest.raises(PoseIndexError, match="batch_size must be >= 1"):
            index.add(good, batch_size=0)
        assert len(index) == 6
    with pytest.raises(PoseIndexError, match="closed"):
        index.query(pose)


def test_export_coco_is_valid_and_atomic(index_path, tmp_path):
    coco_tools = pytest.importorskip("pycocotools.coco")
    with PoseIndex(index_path, create=True) as index:
        index.add(entries(0, 5))
        pose = next(entries(9, 10)).pose
        kp = pose.keypoints[:17].copy()
        kp[5] = (1200.0, 10.0)  # outside the 1000 px wide image, as joint 14 (y = -12) is: exported as
        # absent, as annotate marks them
        partial = PoseKeypoints.create(kp, pose.bbox_xywh, present=np.arange(17) != 3)
        index.add([IndexEntry(partial, "partial.png", image_size_hw=(900, 1000), tags={"who": "x"})])
        out = index.export_coco(tmp_path / "out" / "refs.json")
    assert sorted(p.name for p in out.parent.iterdir()) == ["refs.json"]
    data = json.loads(out.read_text())
    assert [im["id"] for im in data["images"]] == [1, 2, 3, 4, 5, 6]
    assert data["images"][5] == {"id": 6, "file_name": "partial.png", "height": 900, "width": 1000}
    ann = data["annotations"][5]
    assert ann["keypoints"][9:12] == ann["keypoints"][15:18] == ann["keypoints"][42:45] == [0.0, 0.0, 0]
    assert ann["num_keypoints"] == 14 and ann["tags"] == {"who": "x"}
    assert ann["keypoints"][:2] == pose.keypoints[0].tolist() and ann["keypoints"][2] == 2
    assert len(data["annotations"][0]["extra_keypoints"]) == 8
    coco = coco_tools.COCO(str(out))
    assert len(coco.getAnnIds()) == 6


def test_handle_is_thread_safe(index_path):
    with PoseIndex(index_path, create=True) as index:
        index.add(entries(0, 200))
        errors = []

        def work(offset):
            try:
                index.add(entries(1000 + offset * 50, 1050 + offset * 50))
                for e in entries(offset * 10, offset * 10 + 5):
                    index.query(e.pose, k=2)
            except IllustposeError as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(index) == 400
        assert index.query(next(entries(1000, 1001)).pose, k=1)[0].source == "pose-1000"
