"""Weights registry and resolution (illustpose.weights).  Never touches the network:
HF_HUB_OFFLINE is set for every test, and the download tests mock huggingface_hub / gdown."""

from __future__ import annotations

import collections
import sys
import types
import zipfile
from pathlib import Path

import pytest

from illustpose import weights as W
from illustpose.errors import IllustposeError, WeightsNotFoundError
from illustpose.registry import weights_kinds
from release_files import DRIVE, HF_REPO, MEMBERS, POSE, RULES, SEG_CKPT, TAGGER_CKPT, go_online



@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Offline by default; the pack's weights/ folder replaced by an empty tmp folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pack = tmp_path / "pack_weights"
    pack.mkdir()
    monkeypatch.setattr(W, "PACK_WEIGHTS_DIR", pack)
    return pack


@pytest.fixture
def online(monkeypatch):
    go_online(monkeypatch)


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith((".tmp", ".incomplete", ".part"))]


# ---------------------------------------------------------------- registry

def test_unknown_model_lists_choices():
    with pytest.raises(ValueError, match="segmenter"):
        W.resolve("pose")


def test_readme_mentions_everything():
    text = (Path(__file__).parents[1] / "weights" / "README.md").read_text()
    for needle in [*weights_kinds(), HF_REPO, DRIVE, "bizarre_pose_models.zip",
                   "python -m illustpose weights convert", "HF_HUB_OFFLINE", "gdown"]:
        assert needle in text, needle


def test_pack_dir_is_repo_weights():
    repo_weights = Path(__file__).resolve().parents[1] / "weights"
    assert (repo_weights / "README.md").is_file()


# ---------------------------------------------------------------- resolution order

def test_explicit_path_wins(tmp_path, isolated):
    touch(isolated / "segmenter.pth")
    mine = touch(tmp_path / "elsewhere" / "my.ckpt")
    assert W.resolve("segmenter", mine) == mine


def test_explicit_path_missing_is_clear(tmp_path):
    with pytest.raises(WeightsNotFoundError) as e:
        W.resolve("tagger", tmp_path / "nope.ckpt")
    assert "nope.ckpt" in str(e.value) and "does not exist" in str(e.value)


def test_explicit_folder_is_searched_first(tmp_path, isolated):
    touch(isolated / "tagger.pth")
    d = tmp_path / "d"
    f = touch(d / "tagger.safetensors")
    assert W.resolve("tagger", d) == f


def test_search_dirs_in_order_then_pack(tmp_path, isolated):
    a, b = tmp_path / "a", tmp_path / "b"
    in_pack = touch(isolated / "feat_match.ckpt")
    assert W.resolve("feat_match", search_dirs=[a, b]) == in_pack
    in_b = touch(b / "feat_match.ckpt")
    assert W.resolve("feat_match", search_dirs=[a, b]) == in_b
    in_a = touch(a / POSE / "feat_match.ckpt")
    assert W.resolve("feat_match", search_dirs=[a, b]) == in_a
    assert W.resolve("feat_match", search_dirs=[str(b), str(a)]) == in_b


def test_names_in_a_folder_by_preference(tmp_path):
    d = tmp_path / "d"
    base = touch(d / Path(TAGGER_CKPT).name)
    assert W.resolve("tagger", search_dirs=[d]) == base
    zip_rel = touch(d / TAGGER_CKPT)
    assert W.resolve("tagger", search_dirs=[d]) == zip_rel
    hf = touch(d / "tagger.pth")
    assert W.resolve("tagger", search_dirs=[d]) == hf
    ours = touch(d / "tagger.safetensors")
    assert W.resolve("tagger", search_dirs=[d]) == ours


def test_kinds_do_not_cross(tmp_path):
    d = tmp_path / "d"
    touch(d / "feat_match.ckpt")
    touch(d / "feat_concat.safetensors")
    assert W.resolve("feat_match", search_dirs=[d]).name == "feat_match.ckpt"
    assert W.resolve("feat_concat", search_dirs=[d]).name == "feat_concat.safetensors"
    with pytest.raises(WeightsNotFoundError):
        W.resolve("feat_match+data", search_dirs=[d])


def test_tags_resolve(tmp_path):
    d = tmp_path / "d"
    rules = touch(d / RULES)
    assert W.resolve("tags", search_dirs=[d]) == rules
    txt = touch(d / "tags.txt")
    assert W.resolve("tags", search_dirs=[d]) == txt


# ---------------------------------------------------------------- offline error

def test_offline_error_lists_files_sizes_urls_folders(tmp_path, isolated):
    a, b = tmp_path / "comfy" / "models" / "illustpose", tmp_path / "other"
    with pytest.raises(WeightsNotFoundError) as e:
        W.resolve("tagger", search_dirs=[a, b])
    msg = str(e.value)
    assert "'tagger'" in msg and "offline" in msg and "HF_HUB_OFFLINE" in msg
    for d in (a, b, isolated):
        assert str(d) in msg
    assert f"https://huggingface.co/{HF_REPO}/resolve/main/tagger.pth" in msg
    assert f"https://huggingface.co/{HF_REPO}/resolve/main/tags.txt" in msg
    assert "about 103 MB" in msg and "about 300 MB" in msg
    assert TAGGER_CKPT in msg and RULES in msg and DRIVE in msg
    assert "bizarre_pose_models.zip (about 2.34 GB)" in msg
    assert "tagger.safetensors" in msg  # accepted names are listed


def test_offline_pose_error_points_to_drive(tmp_path):
    with pytest.raises(WeightsNotFoundError) as e:
        W.resolve("feat_match+data", offline=True)
    msg = str(e.value)
    assert POSE + "feat_match+data.ckpt" in msg and DRIVE in msg and "about 351 MB" in msg
    assert "https://huggingface.co/h54917/bizarre-pose-estimator or the Google Drive folder" in msg
    assert HF_REPO not in msg  # the community repackaging has no pose model


def test_everything_missing_is_one_message_with_one_download_command(tmp_path, isolated):
    a = tmp_path / "a"
    with pytest.raises(WeightsNotFoundError) as e:
        W.resolve_all([("segmenter", None), ("feat_match+data", None), ("tags", None)], search_dirs=[a],
                      offline=True)
    msg = str(e.value)
    assert msg.startswith("No weights for 'segmenter', 'feat_match+data', 'tags' were found, and downloads are off")
    assert msg.count("Looked in:") == 1 and f"  {a}\n  {isolated}\n" in msg
    assert "segmenter.pth" in msg and POSE + "feat_match+data.ckpt" in msg and "tags.txt" in msg
    assert f"python -m illustpose weights download segmenter feat_match+data tags --weights-dir {a}" in msg
    with pytest.raises(WeightsNotFoundError) as e:  # the pack's folder is the default destination
        W.resolve("tagger", offline=True)
    assert "in one go (online): python -m illustpose weights download tagger\n" in str(e.value)


def test_reachability_probe_answers_quickly_and_once_per_host(monkeypatch):
    import socket

    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    hosts = {}
    assert W._unreachable(f"http://127.0.0.1:{port}/a", hosts) is None
    server.close()
    assert W._unreachable(f"http://127.0.0.1:{port}/b", hosts) is None  # asked once per host
    assert "refused" in W._unreachable("http://127.0.0.1:9/", hosts).lower()
    assert list(hosts) == [("127.0.0.1", port), ("127.0.0.1", 9)]


def test_download_false_never_downloads(monkeypatch, online):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: calls.append(k))
    with pytest.raises(WeightsNotFoundError, match="not allowed"):
        W.resolve("segmenter", download=False)
    assert calls == []


@pytest.mark.parametrize("how", ["env", "constant", "argument"])
def test_offline_prevents_hf_download(monkeypatch, online, how):
    import huggingface_hub
    from huggingface_hub import constants

    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: calls.append(k))
    kw = {}
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    elif how == "constant":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    else:
        kw["offline"] = True
    assert W.is_offline(kw.get("offline"))
    with pytest.raises(WeightsNotFoundError, match="offline"):
        W.resolve("segmenter", **kw)
    assert calls == []


def test_offline_argument_false_overrides_env(monkeypatch):
    assert W.is_offline() is True  # fixture's HF_HUB_OFFLINE=1
    assert W.is_offline(False) is False


# ---------------------------------------------------------------- Hugging Face download (mocked)

@pytest.fixture
def fake_hf(monkeypatch, online):
    import huggingface_hub

    calls = []

    def hf_hub_download(repo_id, filename, *, local_dir=None, **kw):
        calls.append(dict(repo_id=repo_id, filename=filename, local_dir=local_dir, **kw))
        return str(touch(Path(local_dir) / filename, b"weights of " + filename.encode()))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return calls


def test_hf_download_to_first_search_dir(tmp_path, fake_hf):
    a, b = tmp_path / "a", tmp_path / "b"
    got = W.resolve("segmenter", search_dirs=[a, b], progress=False)
    assert got == a / "segmenter.pth" and got.read_bytes() == b"weights of segmenter.pth"
    assert [(c["repo_id"], c["filename"], c["local_dir"]) for c in fake_hf] == [
        (HF_REPO, "segmenter.pth", str(a))]
    assert "tqdm_class" in fake_hf[0]  # progress=False silences the bars
    # found locally next time: no second call
    assert W.resolve("segmenter", search_dirs=[a, b]) == got and len(fake_hf) == 1


def test_hf_download_defaults_to_pack_dir_and_fetches_tag_list(isolated, fake_hf):
    got = W.resolve("tagger")
    assert got == isolated / "tagger.pth"
    assert [c["filename"] for c in fake_hf] == ["tagger.pth", "tags.txt"]
    assert all(c["local_dir"] == str(isolated) and "tqdm_class" not in c for c in fake_hf)
    assert W.tags_path_for(got) == isolated / "tags.txt"


def test_hf_companion_failure_only_warns(isolated, monkeypatch, online):
    import huggingface_hub

    def hf_hub_download(repo_id, filename, *, local_dir=None, **kw):
        if filename == "tags.txt":
            raise OSError("404 Entry Not Found")
        return str(touch(Path(local_dir) / filename))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    with pytest.warns(UserWarning, match="tags.txt"):
        assert W.resolve("tagger") == isolated / "tagger.pth"


def test_hf_failure_without_gdown_is_one_clear_error(tmp_path, monkeypatch, online):
    import huggingface_hub

    def boom(*a, **k):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", boom)
    monkeypatch.setitem(sys.modules, "gdown", None)  # makes `import gdown` fail
    with pytest.raises(WeightsNotFoundError) as e, pytest.warns(UserWarning, match="Drive zip"):
        W.resolve("segmenter", search_dirs=[tmp_path / "a"], cache_dir=tmp_path / "cache")
    msg = str(e.value)
    assert "download failed" in msg and "Name or service not known" in msg
    assert "pip install illustpose[drive]" in msg and "pip install gdown" in msg
    assert "segmenter.pth (about 233 MB)" in msg and SEG_CKPT in msg
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").rglob("*.*"))


# ---------------------------------------------------------------- Drive zip (mocked gdown)

Entry = collections.namedtuple("GoogleDriveFileToDownload", ("id", "path", "local_path"))


def make_zip(path: Path, prefix: str = "", stored: bool = False) -> dict[str, bytes]:
    contents = {m: f"content of {m}\n".encode() * 50 for m in MEMBERS}
    comp = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w", comp) as zf:
        for m, data in contents.items():
            zf.writestr(prefix + m, data)
    return contents


@pytest.fixture
def fake_gdown(tmp_path, monkeypatch, online):
    """A gdown module whose folder lists the zip and whose download copies a local zip."""
    src = tmp_path / "src" / "bizarre_pose_models.zip"
    src.parent.mkdir()
    g = types.SimpleNamespace(calls=[], src=src, transform=lambda b: b)
    g.contents = make_zip(src)

    def download_folder(url=None, skip_download=False, quiet=False, **kw):
        g.calls.append(("list", url, skip_download))
        assert skip_download, "the folder must only be listed"
        return [Entry("README_ID", "README.md", "x"),
                Entry("ZIP_ID", "bizarre_pose_models.zip", "y")]

    def download(url=None, output=None, quiet=False, id=None, resume=False, **kw):
        g.calls.append(("get", id, output))
        Path(output).write_bytes(g.transform(src.read_bytes()))
        return output

    g.download_folder, g.download = download_folder, download

    import huggingface_hub

    def no_mirror(repo_id, filename, **kw):  # the zip's Hugging Face mirror fails: Drive is used
        raise ConnectionError("mirror unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_mirror)
    monkeypatch.setitem(sys.modules, "gdown", g)
    return g


def test_drive_zip_extracts_only_needed_members(tmp_path, fake_gdown):
    dest, cache = tmp_path / "dest", tmp_path / "cache"
    got = W.resolve("feat_match", search_dirs=[dest], cache_dir=cache, progress=False)
    assert got == dest / POSE / "feat_match.ckpt"
    assert got.read_bytes() == fake_gdown.contents[POSE + "feat_match.ckpt"]
    assert [p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() and p.name != W.HASHES_FILE] == [
        POSE + "feat_match.ckpt"]
    assert fake_gdown.calls[0] == ("list", DRIVE, True)
    assert fake_gdown.calls[1][:2] == ("get", "ZIP_ID")
    assert (cache / "bizarre_pose_models.zip").is_file() and not leftovers(tmp_path)

    # a second model comes from the cached zip: no new download
    n = len(fake_gdown.calls)
    got2 = W.resolve("feat_concat+data", search_dirs=[dest], cache_dir=cache)
    assert got2.read_bytes() == fake_gdown.contents[POSE + "feat_concat+data.ckpt"]
    assert len(fake_gdown.calls) == n
    # and the first is now found on disk
    assert W.resolve("feat_match", search_dirs=[dest], cache_dir=cache) == got


def test_drive_tagger_fallback_brings_rules(tmp_path, monkeypatch, fake_gdown):
    import huggingface_hub

    def hf_down(*a, **k):
        raise ConnectionError("HF unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_down)
    dest = tmp_path / "dest"
    with pytest.warns(UserWarning, match="HF unreachable; trying the authors' Drive zip"):
        got = W.resolve("tagger", search_dirs=[dest], cache_dir=tmp_path / "cache")
    assert got == dest / TAGGER_CKPT
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() and p.name != W.HASHES_FILE)
    assert files == sorted([TAGGER_CKPT, RULES])
    assert W.tags_path_for(got) == dest / RULES


def test_drive_zip_with_top_folder(tmp_path, fake_gdown):
    make_zip(fake_gdown.src, prefix="bizarre_pose_models/")
    got = W.resolve("feat_concat", search_dirs=[tmp_path / "d"], cache_dir=tmp_path / "c")
    assert got == tmp_path / "d" / POSE / "feat_concat.ckpt" and got.is_file()


def test_truncated_download_leaves_nothing(tmp_path, fake_gdown):
    fake_gdown.transform = lambda b: b[: len(b) // 2]
    dest, cache = tmp_path / "dest", tmp_path / "cache"
    with pytest.raises(WeightsNotFoundError) as e:
        W.resolve("feat_match", search_dirs=[dest], cache_dir=cache)
    assert "truncated" in str(e.value) and DRIVE in str(e.value)
    assert not dest.exists() or not any(dest.rglob("*.*"))
    assert not any(cache.iterdir()) and not leftovers(tmp_path)


def test_corrupt_member_leaves_no_partial_file(tmp_path, fake_gdown):
    make_zip(fake_gdown.src, stored=True)
    raw = bytearray(fake_gdown.src.read_bytes())
    target = fake_gdown.contents[POSE + "feat_match.ckpt"]
    i = raw.index(target)
    raw[i + len(target) // 2] ^= 0xFF  # flip a data byte: CRC fails at the end of the read
    fake_gdown.src.write_bytes(bytes(raw))
    dest, cache = tmp_path / "dest", tmp_path / "cache"
    with pytest.raises(WeightsNotFoundError, match="damaged"):
        W.resolve("feat_match", search_dirs=[dest], cache_dir=cache)
    assert not (dest / POSE / "feat_match.ckpt").exists()
    assert not leftovers(tmp_path)
    assert not (cache / "bizarre_pose_models.zip").exists()  # our damaged cache is dropped


def test_gdown_quota_refusal(tmp_path, fake_gdown):
    fake_gdown.download = lambda **kw: None  # old gdown returns None when Drive refuses
    with pytest.raises(WeightsNotFoundError) as e:
        W.resolve("feat_match", search_dirs=[tmp_path / "d"], cache_dir=tmp_path / "c")
    assert "quota" in str(e.value) and "by hand" in str(e.value)


def test_zip_missing_from_folder(tmp_path, fake_gdown):
    fake_gdown.download_folder = lambda **kw: [Entry("R", "README.md", "x")]
    with pytest.raises(WeightsNotFoundError, match="has no bizarre_pose_models.zip"):
        W.resolve("feat_match", search_dirs=[tmp_path / "d"], cache_dir=tmp_path / "c")


def test_local_zip_is_extracted_offline(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    contents = make_zip(d / "bizarre_pose_models.zip")
    got = W.resolve("feat_match+data", search_dirs=[d])  # HF_HUB_OFFLINE=1 from the fixture
    assert got == d / POSE / "feat_match+data.ckpt"
    assert got.read_bytes() == contents[POSE + "feat_match+data.ckpt"]
    assert (d / "bizarre_pose_models.zip").is_file()  # the user's zip is left alone


def test_companion_missing_from_zip_only_warns(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    with zipfile.ZipFile(d / "bizarre_pose_models.zip", "w") as zf:
        zf.writestr(TAGGER_CKPT, b"ckpt")
    with pytest.warns(UserWarning, match="intently_combatively_rules.json"):
        assert W.resolve("tagger", search_dirs=[d]) == d / TAGGER_CKPT


def test_zip_without_the_member(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    with zipfile.ZipFile(d / "bizarre_pose_models.zip", "w") as zf:
        zf.writestr("something/else.txt", b"")
    with pytest.raises(WeightsNotFoundError, match="has no member"):
        W.resolve("feat_concat", search_dirs=[d])


# ---------------------------------------------------------------- tag-name file

def test_tags_path_for_order(tmp_path, isolated):
    d = tmp_path / "d"
    ckpt = touch(d / "tagger.pth")
    assert W.tags_path_for(ckpt) is None
    in_pack = touch(isolated / "tags.txt")
    assert W.tags_path_for(ckpt) == in_pack
    s = tmp_path / "s"
    in_search = touch(s / "intently_combatively_rules.json")
    assert W.tags_path_for(ckpt, search_dirs=[s]) == in_search
    rel = touch(d / RULES)
    assert W.tags_path_for(ckpt, search_dirs=[s]) == rel
    base = touch(d / "intently_combatively_rules.json")
    assert W.tags_path_for(ckpt) == base
    txt = touch(d / "tags.txt")
    assert W.tags_path_for(ckpt) == txt
    stem = touch(d / "tagger.tags.txt")
    assert W.tags_path_for(ckpt) == stem
    explicit = touch(tmp_path / "mine.txt")
    assert W.tags_path_for(ckpt, explicit) == explicit


def test_tags_path_for_authors_tree(tmp_path):
    root = tmp_path / "root"
    ckpt = touch(root / TAGGER_CKPT)
    rules = touch(root / RULES)
    assert W.tags_path_for(ckpt) == rules


def test_tags_path_for_explicit_missing(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        W.tags_path_for(tmp_path / "t.pth", tmp_path / "missing.txt")


def test_import_reads_nothing_and_leaves_environ_alone():
    code = (
        "import os; before = dict(os.environ)\n"
        "import sys, illustpose.weights as w\n"
        "assert 'torch' not in sys.modules, 'torch imported with the weights module'\n"
        "assert dict(os.environ) == before, 'os.environ changed at import'\n"
        "assert 'gdown' not in __import__('sys').modules\n"
    )
    import subprocess

    r = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert issubclass(WeightsNotFoundError, IllustposeError)
