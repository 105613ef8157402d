"""Checked downloads: pinned sha256s, recorded ones, the zip's two sources, HF_HUB_OFFLINE, and
ComfyUI-AnimePose's file names.  Never touches the network: huggingface_hub and gdown are mocked."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import sys
import types
import warnings
import zipfile
from pathlib import Path

import pytest

from illustpose import weights as W
from illustpose.cli import main
from illustpose.errors import WeightsNotFoundError
from illustpose.registry import known_files
from release_files import DRIVE, MEMBERS, POSE, go_online

PINNED_ZIP = "27d4eef72bfd7ca664ebbf59e4d6432ab6fe8b748679d76dc94ee0dbd4b99c4e"  # the mirror's, from the issue
MIRROR = "h54917/bizarre-pose-estimator"
Entry = collections.namedtuple("GoogleDriveFileToDownload", ("id", "path", "local_path"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "made.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for m in MEMBERS:
            zf.writestr(m, f"content of {m}\n".encode() * 20)
    return path.read_bytes()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Online, with every host answering; the pack's folder and the user's cache in tmp."""
    go_online(monkeypatch)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    pack = tmp_path / "pack"
    pack.mkdir()
    monkeypatch.setattr(W, "PACK_WEIGHTS_DIR", pack)
    return pack


@pytest.fixture
def hub(monkeypatch):
    """huggingface_hub.hf_hub_download serving ``hub.files[(repo_id, filename)]``; others fail."""
    import huggingface_hub

    h = types.SimpleNamespace(files={}, calls=[])

    def hf_hub_download(repo_id, filename, *, local_dir=None, **kw):
        h.calls.append((repo_id, filename))
        if (repo_id, filename) not in h.files:
            raise ConnectionError(f"no {repo_id}/{filename} here")
        out = Path(local_dir) / filename
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(h.files[repo_id, filename])
        return str(out)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return h


@pytest.fixture
def drive(monkeypatch):
    """A gdown whose Drive folder lists the zip and serves ``drive.data``."""
    g = types.SimpleNamespace(calls=[], data=b"")

    def download_folder(url=None, skip_download=False, quiet=False, **kw):
        g.calls.append("list")
        return [Entry("ZIP_ID", "bizarre_pose_models.zip", "y")]

    def download(url=None, output=None, quiet=False, id=None, resume=False, **kw):
        g.calls.append("get")
        Path(output).write_bytes(g.data)
        return output

    g.download_folder, g.download = download_folder, download
    monkeypatch.setitem(sys.modules, "gdown", g)
    return g


def no_leftovers(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith((".tmp", ".incomplete", ".part"))]


# ---------------------------------------------------------------- the authors' zip

def test_mirror_zip_with_the_pinned_sha256_is_used_and_recorded(tmp_path, monkeypatch, hub, drive):
    data = zip_bytes(tmp_path)
    monkeypatch.setattr(W, "DRIVE_ZIP", dataclasses.replace(W.DRIVE_ZIP, sha256=sha(data), size=len(data)))
    hub.files[MIRROR, "bizarre_pose_models.zip"] = data
    dest, cache = tmp_path / "dest", tmp_path / "cache"
    got = W.resolve("feat_match", search_dirs=[dest], cache_dir=cache, progress=False)
    assert got == dest / POSE / "feat_match.ckpt" and drive.calls == []  # Drive is not needed
    zip_rec = W.hash_records(cache)["bizarre_pose_models.zip"]
    assert (zip_rec["status"], zip_rec["sha256"], zip_rec["pinned"]) == ("verified", sha(data), sha(data))
    member = W.hash_records(dest)[POSE + "feat_match.ckpt"]
    assert member["status"] == "recorded" and member["sha256"] == sha(got.read_bytes())
    assert member["zip_sha256"] == sha(data) and member["size"] == got.stat().st_size
    assert no_leftovers(tmp_path)


def test_mirror_zip_unlike_the_pinned_sha256_is_refused_and_deleted(tmp_path, monkeypatch, hub):
    data = zip_bytes(tmp_path)
    hub.files[MIRROR, "bizarre_pose_models.zip"] = data
    monkeypatch.setitem(sys.modules, "gdown", None)  # no Drive fallback either
    dest, cache = tmp_path / "dest", tmp_path / "cache"
    with pytest.raises(WeightsNotFoundError) as e, pytest.warns(UserWarning, match="trying the authors' Google"):
        W.resolve("feat_match", search_dirs=[dest], cache_dir=cache)
    msg = str(e.value)
    assert "refused" in msg and sha(data) in msg and PINNED_ZIP in msg and "deleted" in msg
    assert "pip install gdown" in msg  # and why Drive could not stand in
    assert not (cache / "bizarre_pose_models.zip").exists() and "bizarre_pose_models.zip" not in W.hash_records(cache)
    assert not dest.exists() or not any(dest.rglob("*.ckpt"))


def test_drive_zip_unlike_the_pinned_sha256_warns_with_both_digests_and_is_recorded(tmp_path, hub, drive):
    drive.data = data = zip_bytes(tmp_path)  # the mirror has nothing: Drive serves it
    dest, cache = tmp_path / "dest", tmp_path / "cache"
    with pytest.warns(UserWarning) as caught:
        got = W.resolve("feat_match+data", search_dirs=[dest], cache_dir=cache)
    loud = [str(w.message) for w in caught if "UNVERIFIED" in str(w.message)]
    assert len(loud) == 1 and sha(data) in loud[0] and PINNED_ZIP in loud[0] and DRIVE in loud[0]
    assert got.read_bytes() == f"content of {POSE}feat_match+data.ckpt\n".encode() * 20
    zip_rec = W.hash_records(cache)["bizarre_pose_models.zip"]
    assert (zip_rec["status"], zip_rec["sha256"], zip_rec["pinned"], zip_rec["source"]) == (
        "differs", sha(data), PINNED_ZIP, DRIVE)
    assert W.hash_records(dest)[POSE + "feat_match+data.ckpt"]["zip_sha256"] == sha(data)
    assert W.zip_record(cache)["status"] == "differs" and no_leftovers(tmp_path)


def test_hf_hub_offline_stops_the_drive_download_too(tmp_path, monkeypatch, hub, drive):
    drive.data = zip_bytes(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="HF_HUB_OFFLINE"):
        W.resolve("feat_match", offline=False, search_dirs=[tmp_path / "d"], cache_dir=tmp_path / "c")
    with pytest.raises(WeightsNotFoundError, match="HF_HUB_OFFLINE"):
        W.resolve("segmenter", offline=False, search_dirs=[tmp_path / "d"], cache_dir=tmp_path / "c")
    assert drive.calls == [] and hub.calls == []
    assert main(["weights", "download", "feat_match", "--weights-dir", str(tmp_path / "d")]) == 2
    assert drive.calls == [] and hub.calls == []


# ---------------------------------------------------------------- Hugging Face files

def test_hf_file_unlike_its_pinned_sha256_is_refused_and_deleted(tmp_path, hub):
    seg = known_files("segmenter")[0]
    hub.files[seg.repo_id, seg.filename] = b"not the segmenter"
    with pytest.raises(WeightsNotFoundError) as e:
        W._download_hf(dataclasses.replace(seg, sha256="0" * 64), tmp_path, progress=False)
    assert "refused" in str(e.value) and "0" * 64 in str(e.value) and sha(b"not the segmenter") in str(e.value)
    assert not (tmp_path / "segmenter.pth").exists() and W.hash_records(tmp_path) == {}
    hub.files[seg.repo_id, seg.filename] = b"the segmenter"
    got = W._download_hf(dataclasses.replace(seg, sha256=sha(b"the segmenter")), tmp_path, progress=False)
    assert got.read_bytes() == b"the segmenter" and W.hash_records(tmp_path)["segmenter.pth"]["status"] == "verified"


def test_an_unknown_sha256_is_recorded_at_the_first_download_and_listed(isolated, hub, capsys):
    hub.files["public-data/bizarre-pose-estimator-models", "segmenter.pth"] = b"segmenter weights"
    got = W.resolve("segmenter", progress=False)
    rec = W.hash_records(isolated)["segmenter.pth"]
    assert got == isolated / "segmenter.pth"
    assert (rec["sha256"], rec["status"], rec["pinned"]) == (sha(b"segmenter weights"), "recorded", None)
    assert rec["source"].endswith("/segmenter.pth")

    assert main(["weights", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    seg = next(x for x in lines if " segmenter.pth " in x)
    assert "about 233 MB (public)" in seg and f"recorded at its first download: {sha(b'segmenter weights')[:12]}" in seg
    tagger = next(x for x in lines if " tagger.pth " in x)
    assert "(computed)" in tagger and "sha256 unknown (recorded at the first download)" in tagger
    assert "(assumed)" in next(x for x in lines if "feat_concat.ckpt" in x)
    assert "sha256 unknown)" in next(x for x in lines if "anime_pose_head.safetensors" in x)  # never downloaded
    assert PINNED_ZIP in next(x for x in lines if "bizarre_pose_models.zip" in x)


def test_a_recorded_file_that_changed_is_noticed_once(tmp_path, hub):
    hub.files["public-data/bizarre-pose-estimator-models", "segmenter.pth"] = b"as downloaded"
    d = tmp_path / "d"
    got = W.resolve("segmenter", search_dirs=[d], progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert W.resolve("segmenter", search_dirs=[d]) == got  # unchanged: silent, not even hashed
    got.write_bytes(b"replaced by hand")
    with pytest.warns(UserWarning, match="changed after illustpose recorded it"):
        assert W.resolve("segmenter", search_dirs=[d]) == got
    rec = W.hash_records(d)["segmenter.pth"]
    assert (rec["status"], rec["sha256"], rec["was"]) == ("changed", sha(b"replaced by hand"), sha(b"as downloaded"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        W.resolve("segmenter", search_dirs=[d])  # said once


def test_unreadable_records_are_ignored(tmp_path):
    (tmp_path / W.HASHES_FILE).write_text("{not json")
    assert W.hash_records(tmp_path) == {} and W.hash_records(tmp_path / "absent") == {}


# ---------------------------------------------------------------- ComfyUI-AnimePose's files

def test_animepose_files_are_accepted_by_name_after_the_complete_ones(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "character_bg_seg.safetensors").write_bytes(b"x")
    (d / "anime_pose_head.safetensors").write_bytes(b"x")
    assert W.resolve("segmenter", search_dirs=[d]) == d / "character_bg_seg.safetensors"
    assert W.resolve("feat_concat+data", search_dirs=[d]) == d / "anime_pose_head.safetensors"
    (d / "segmenter.pth").write_bytes(b"x")
    (d / "feat_concat+data.ckpt").write_bytes(b"x")
    assert W.resolve("segmenter", search_dirs=[d]) == d / "segmenter.pth"
    assert W.resolve("feat_concat+data", search_dirs=[d]) == d / "feat_concat+data.ckpt"


def test_animepose_files_are_never_downloaded(tmp_path, hub):
    with pytest.raises(WeightsNotFoundError) as e, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        W.resolve("feat_concat+data", search_dirs=[tmp_path / "d"], cache_dir=tmp_path / "c")
    assert all("AnimePose" not in repo for repo, _ in hub.calls)
    assert "anime_pose_head.safetensors" in str(e.value) and "--rcnn-weights" in str(e.value)
