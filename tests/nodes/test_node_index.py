"""Pose Index Add / Query / Info: index files by name or path, poses from POSE_KEYPOINT or images,
results as images, renders and JSON, bad input, the open-index cache."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from illustpose.keypoints import coco17_to_openpose18, to_pose_keypoint
from illustpose.render import render_pose_keypoint
from illustpose.retrieval import PoseIndex  # imported before the pack, so the tests share its classes

ADD, QUERY, INFO = "PoseIndexAdd|illustpose", "PoseIndexQuery|illustpose", "PoseIndexInfo|illustpose"
CANVAS = 64  # square POSE_KEYPOINT canvases: at query size CANVAS a render is the frame drawn as it is
H, W = 24, 32


def skeletons(n: int, seed: int = 0) -> np.ndarray:
    """(n, 17, 2) distinct poses inside the canvas."""
    rng = np.random.default_rng(seed)
    return rng.uniform(8.0, CANVAS - 8.0, (n, 17, 2)).round(1)


def frames(xy: np.ndarray, canvas_hw=(CANVAS, CANVAS)) -> list[dict]:
    """POSE_KEYPOINT with one person per frame; the neck is the shoulders' midpoint (as stored poses give it)."""
    return to_pose_keypoint([[coco17_to_openpose18(p, np.ones(17, bool))] for p in xy], [canvas_hw] * len(xy))


def images(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, H, W, 3, generator=torch.Generator().manual_seed(seed))


def add(pack, index, allow_duplicates=False, **kw):
    """Pose Index Add fed as ComfyUI feeds it from non-list outputs: every input a list of one
    (the node takes whole lists, ``is_input_list``)."""
    inputs = {"index": str(index), "allow_duplicates": allow_duplicates, **kw}
    return pack.run(ADD, **{k: [v] for k, v in inputs.items()})


def query(pack, index, k=3, mirror=True, min_joints=5, size=CANVAS, **kw):
    return pack.run(QUERY, index=str(index), k=k, mirror=mirror, min_joints=min_joints, size=size, **kw)


def test_add_from_pose_keypoint_then_query_returns_images_renders_and_json(pack, tmp_path):
    index, poses = tmp_path / "refs.sqlite", skeletons(5)
    (added, summary), ui = add(pack, index, pose_keypoint=frames(poses), sources="a\nb\nc\nd\ne")
    assert added == 5 and "added 5 poses" in summary and "5 entries" in summary and ui == {"text": [summary]}

    (imgs, renders, results, sources), ui = query(pack, index, k=3, pose_keypoint=frames(poses[2:3]))
    assert imgs.shape == renders.shape == (3, CANVAS, CANVAS, 3) and imgs.dtype == torch.float32
    hits = json.loads(results)
    assert [h["rank"] for h in hits] == [1, 2, 3] and set(hits[0]) == {"rank", "distance", "source", "mirrored"}
    assert hits[0]["source"] == "c" and hits[0]["distance"] == pytest.approx(0.0, abs=1e-3)
    assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)
    assert sources.splitlines() == [h["source"] for h in hits]
    assert ui["text"][0].splitlines()[0].split()[:3] == ["1", f"{hits[0]['distance']:.2f}", "c"]
    # no image was stored: grey placeholders, each reported; the render is the frame as RenderOpenPose draws it
    assert torch.all(imgs == 128 / 255) and "placeholder for rank 1" in ui["text"][0]
    assert np.array_equal(np.rint(renders[0].numpy() * 255), render_pose_keypoint(frames(poses[2:3]))[0])


def test_a_list_is_one_run_with_one_summary(pack, tmp_path):
    """Load Image Folder's lists (one item per file, filenames as sources): one call, one total."""
    index, xy = tmp_path / "list.sqlite", skeletons(3, seed=11)
    lists = {"index": [str(index)], "allow_duplicates": [False],
             "pose_keypoint": [frames(xy[i:i + 1]) for i in range(3)], "sources": ["a.png", "sub/b.png", "c.png"]}
    (added, summary), ui = pack.run(ADD, **lists)
    assert added == 3 and ui == {"text": [summary]}
    assert summary == f"{index}: added 3 poses, skipped 0 already indexed; 3 entries"
    with PoseIndex(index) as store:
        assert [store.get(i).source for i in (1, 2, 3)] == ["a.png", "sub/b.png", "c.png"]
    (added, summary), _ = pack.run(ADD, **lists)
    assert added == 0 and summary == f"{index}: added 0 poses, skipped 3 already indexed; 3 entries"


def test_requeuing_an_unchanged_add_reports_what_each_run_did(pack, tmp_path):
    """ComfyUI re-runs a node whose fingerprint changed and serves the rest from its cache."""
    index, kps = str(tmp_path / "requeue.sqlite"), frames(skeletons(2, seed=12))
    fingerprint = pack.node(ADD).fingerprint_inputs
    first = fingerprint(index=[index], allow_duplicates=[False], pose_keypoint=(None,))
    assert first != first  # no index yet: NaN, the first queue runs
    assert "added 2 poses" in add(pack, index, pose_keypoint=kps)[0][1]
    second = fingerprint(index=[index], allow_duplicates=[False], pose_keypoint=(None,))
    assert second == second  # the file now exists: a real fingerprint, different from the first
    assert "added 0 poses, skipped 2" in add(pack, index, pose_keypoint=kps)[0][1]  # the second queue re-runs
    assert fingerprint(index=[index], allow_duplicates=[False], pose_keypoint=(None,)) == second  # nothing written:
    # a third queue is served from the cache, whose text ("added 0 poses") is still what happened
    assert fingerprint(index=(None,)) != fingerprint(index=(None,))  # index from a link: unknown, always re-run


def test_the_same_poses_again_are_skipped_unless_duplicates_are_allowed(pack, tmp_path):
    index, kps = tmp_path / "dup.sqlite", frames(skeletons(3, seed=1))
    assert add(pack, index, pose_keypoint=kps)[0][0] == 3
    (added, summary), _ = add(pack, index, pose_keypoint=kps)
    assert added == 0 and "skipped 3 already indexed; 3 entries" in summary
    assert add(pack, index, allow_duplicates=True, pose_keypoint=kps)[0][0] == 3


def test_unlabelled_poses_get_generated_sources_and_several_people_are_numbered(pack, tmp_path):
    index, xy = tmp_path / "people.sqlite", skeletons(3, seed=2)
    two = to_pose_keypoint([[coco17_to_openpose18(p, np.ones(17, bool)) for p in xy[:2]]], [(CANVAS, CANVAS)])
    add(pack, index, pose_keypoint=two, sources="duo")
    add(pack, index, pose_keypoint=frames(xy[2:]))
    with PoseIndex(index) as store:
        names = [store.get(i).source for i in (1, 2, 3)]
    assert names[:2] == ["duo#0", "duo#1"] and names[2].startswith("pose_") and len(names[2]) == 17


def test_add_from_images_stores_pngs_beside_the_index_and_a_query_image_finds_itself(pack, tmp_path, monkeypatch):
    index, image = tmp_path / "art.sqlite", images(3, seed=3)
    models = {"pose_model": pack.load("pose"), "segmenter": pack.load("segmenter")}
    (added, _), _ = add(pack, index, image=image, sources="x/hero.png\n\nvillain\nsidekick", **models)
    assert added == 3
    saved = tmp_path / "art_images"
    assert sorted(p.name for p in saved.iterdir()) == ["hero.png", "sidekick.png", "villain.png"]
    with Image.open(saved / "hero.png") as im:
        assert np.array_equal(np.asarray(im), (255 * image[0].numpy()).astype(np.uint8))
    with PoseIndex(index) as store:
        e = store.get(1)
        assert (e.source, e.tags, e.image_size_hw) == (str(saved / "hero.png"), {"label": "x/hero.png"}, (H, W))
        assert {role: rec["file"] for role, rec in store.model.items()} == {
            "segmenter": "segmenter.safetensors", "pose": "feat_match+data.safetensors"}
        assert all(len(rec["sha256"]) == 64 and Path(rec["path"]).is_file() for rec in store.model.values())

    runs = []
    monkeypatch.setattr(models["pose_model"], "estimate", lambda *a, **k: runs.append(1))
    (again, summary), _ = add(pack, index, image=image, **models)  # known images: skipped before the model runs
    assert again == 0 and "skipped 3" in summary and runs == []
    monkeypatch.undo()

    (imgs, renders, results, _), _ = query(pack, index, k=3, image=image[1:2], **models)
    assert imgs.shape == renders.shape == (3, CANVAS, CANVAS, 3)
    hits = json.loads(results)
    mine = next(h for h in hits if h["source"].endswith("villain.png"))
    assert mine["distance"] == pytest.approx(0.0, abs=1e-3)
    row = hits.index(mine)
    top, bottom = (CANVAS - 48) // 2, (CANVAS - 48) // 2 + 48  # a 32x24 image fills 64x48, black bars above/below
    assert torch.all(imgs[row, :top] == 0) and torch.all(imgs[row, bottom:] == 0)
    expected = np.asarray(Image.fromarray((255 * image[1].numpy()).astype(np.uint8)).resize((CANVAS, 48),
                                                                                          Image.Resampling.LANCZOS))
    assert np.array_equal(np.rint(imgs[row, top:bottom].numpy() * 255), expected)


def test_images_with_their_pose_keypoint_are_scaled_to_the_images(pack, tmp_path):
    index, xy = tmp_path / "kp.sqlite", skeletons(2, seed=4)
    (added, _), _ = add(pack, index, image=images(2, seed=4), pose_keypoint=frames(xy))
    assert added == 2 and len(list((tmp_path / "kp_images").glob("image_*.png"))) == 2
    with PoseIndex(index) as store:
        e = store.get(1)
    assert e.image_size_hw == (H, W) and e.source.endswith(".png")
    assert np.allclose(e.pose.keypoints[:17], xy[0] * [W / CANVAS, H / CANVAS])


def test_k_larger_than_the_index_returns_every_entry(pack, tmp_path):
    index, xy = tmp_path / "small.sqlite", skeletons(2, seed=5)
    add(pack, index, pose_keypoint=frames(xy))
    (imgs, renders, results, sources), _ = query(pack, index, k=10, pose_keypoint=frames(xy[:1]))
    assert len(json.loads(results)) == 2 and imgs.shape[0] == renders.shape[0] == 2 and len(sources.splitlines()) == 2


def test_a_missing_source_image_is_a_grey_placeholder(pack, tmp_path):
    index, xy = tmp_path / "gone.sqlite", skeletons(2, seed=6)
    add(pack, index, image=images(2, seed=6), pose_keypoint=frames(xy), sources="keep\nlose")
    (tmp_path / "gone_images" / "lose.png").unlink()
    (imgs, renders, results, _), ui = query(pack, index, k=2, pose_keypoint=frames(xy[1:]))
    hits = json.loads(results)
    assert hits[0]["source"].endswith("lose.png")
    assert torch.all(imgs[0] == 128 / 255) and not torch.all(imgs[1] == 128 / 255)
    assert renders[0].max() > 0 and "placeholder for rank 1" in ui["text"][0] and "no such image file" in ui["text"][0]


def test_a_name_lives_in_the_indexes_folder_and_info_describes_it(pack, comfy_base):
    name = "sub/info.sqlite"
    add(pack, name, pose_keypoint=frames(skeletons(2, seed=7)))
    path = comfy_base / "models" / "illustpose" / "indexes" / name
    assert path.is_file()
    (text,), ui = pack.run(INFO, index=name)
    info = json.loads(text)
    assert info["entries"] == 2 and info["descriptor_kind"] == "all25" and info["path"] == str(path)
    assert info["partial_entries"] == 2 and ui == {"text": [text]}  # 17 of the 25 joints


def test_query_and_info_rerun_when_the_index_changes(pack, tmp_path):
    index, xy = str(tmp_path / "fp.sqlite"), skeletons(3, seed=8)
    node = pack.node(QUERY)
    fingerprint = node.fingerprint_inputs
    assert fingerprint(index=index) != fingerprint(index=index)  # no file yet: NaN, always re-run
    add(pack, index, pose_keypoint=frames(xy[:2]))
    before = fingerprint(index=index, k=3)
    assert fingerprint(index=index, k=3) == before
    add(pack, index, pose_keypoint=frames(xy[2:]))
    assert fingerprint(index=index, k=3) != before
    assert fingerprint(k=3) != fingerprint(k=3)  # index connected by a link: not known, always re-run


def test_repeated_queries_reuse_the_open_index_and_a_replaced_file_is_reopened(pack, tmp_path):
    cache = pack.module.nodes.index._open
    index, xy = tmp_path / "cache.sqlite", skeletons(4, seed=9)
    add(pack, index, pose_keypoint=frames(xy[:2]), sources="old0\nold1")
    query(pack, index, pose_keypoint=frames(xy[:1]))
    handle = cache[str(index.resolve())][1]
    query(pack, index, pose_keypoint=frames(xy[:1]))
    assert cache[str(index.resolve())][1] is handle
    index.unlink()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"cache.sqlite{suffix}").unlink(missing_ok=True)
    with PoseIndex(index, create=True) as fresh:
        fresh.add([])
    add(pack, index, pose_keypoint=frames(xy[2:]), sources="new2\nnew3")
    (_, _, _, sources), _ = query(pack, index, k=4, pose_keypoint=frames(xy[2:3]))
    assert set(sources.splitlines()) == {"new2", "new3"}
    assert cache[str(index.resolve())][1] is not handle and handle._closed


@pytest.mark.parametrize("content, message", [
    (b"", "empty file, not a pose index"),
    (b"hello, not sqlite", "not a pose index: not an SQLite database"),
    (None, "SQLite database of another application"),
])
def test_a_foreign_file_is_a_clear_error(pack, tmp_path, content, message):
    path = tmp_path / "foreign.sqlite"
    if content is None:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t (x)")
        conn.close()
    else:
        path.write_bytes(content)
    for run in (lambda: pack.run(INFO, index=str(path)),
                lambda: query(pack, path, pose_keypoint=frames(skeletons(1))),
                lambda: add(pack, path, pose_keypoint=frames(skeletons(1)))):
        with pytest.raises(pack.node_error, match=message):
            run()


def test_an_empty_or_missing_index_is_a_clear_error(pack, tmp_path):
    PoseIndex(tmp_path / "empty.sqlite", create=True).close()
    with pytest.raises(pack.node_error, match="is empty"):
        query(pack, tmp_path / "empty.sqlite", pose_keypoint=frames(skeletons(1)))
    for run in (lambda: query(pack, tmp_path / "nope.sqlite", pose_keypoint=frames(skeletons(1))),
                lambda: pack.run(INFO, index=str(tmp_path / "nope.sqlite"))):
        with pytest.raises(pack.node_error, match="no pose index at .*nope.sqlite; add poses with Pose Index Add"):
            run()
    with pytest.raises(pack.node_error, match="index is empty: give a file name"):
        pack.run(INFO, index="  ")


def test_bad_input_combinations_are_clear_errors(pack, tmp_path):
    index, kps = tmp_path / "bad.sqlite", frames(skeletons(2, seed=10))
    pose_model = pack.load("pose")
    for kw, message in [
        ({}, "nothing to add"),
        ({"image": images(1)}, "nothing to add"),
        ({"pose_model": pose_model, "pose_keypoint": kps}, "pose_model .* or pose_keypoint, not both"),
        ({"pose_keypoint": kps, "sources": "one"}, "sources holds 1 labels for 2 frames"),
        ({"pose_keypoint": kps, "image": images(3)}, "pose_keypoint holds 2 frames for 3 images"),
    ]:
        with pytest.raises(pack.node_error, match=message):
            add(pack, index, **kw)
    add(pack, index, pose_keypoint=kps)
    no_people = [{"people": [], "canvas_height": CANVAS, "canvas_width": CANVAS}]
    few = to_pose_keypoint([[coco17_to_openpose18(skeletons(1)[0], np.arange(17) < 3)]], [(CANVAS, CANVAS)])
    for kw, message in [
        ({}, "nothing to query with"),
        ({"image": images(1)}, "needs pose_model"),
        ({"image": images(1), "pose_model": pose_model, "pose_keypoint": kps}, "not both"),
        ({"pose_keypoint": no_people}, "first frame holds no person"),
        ({"pose_keypoint": few}, "joints"),
    ]:
        with pytest.raises(pack.node_error, match=message):
            query(pack, index, **kw)


def test_danbooru_links_show_as_cards_and_results_json_carries_the_links(pack, tmp_path):
    """An index of the authors' support set (index import-danbooru, link-only entries): cards with
    the post id instead of grey placeholders, black renders, and the links in results_json."""
    from pathlib import Path

    from illustpose import cli

    release = Path(__file__).parents[1] / "data" / "danbooru_sklearn_1_0_1"
    index = tmp_path / "danbooru.sqlite"
    assert cli.main(["index", "import-danbooru", str(index), "--from", str(release)]) == 0
    (imgs, renders, results, sources), ui = query(pack, index, k=2, mirror=False, pose_keypoint=frames(skeletons(1)))
    hits = json.loads(results)
    assert len(hits) == 2 and hits[0]["link"] == f"https://danbooru.donmai.us/posts/{hits[0]['danbooru_id']}"
    assert sources.splitlines() == [h["link"] for h in hits] and "placeholder" not in ui["text"][0]
    assert not torch.all(imgs == 128 / 255) and torch.all(renders == 0)
