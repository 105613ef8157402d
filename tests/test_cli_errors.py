"""Errors a user can act on, and the consistency of the command line (issue 12).

Each user mistake gives one line on stderr (no traceback) and the documented exit status:
2 for usage and setup errors, 130 for Ctrl-C.
"""

from __future__ import annotations

from types import SimpleNamespace

import argparse
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from illustpose import registry
from illustpose import weights as W
from illustpose.cli import _parser, main
from illustpose.cli import pipeline as cli_pipeline
from illustpose.retrieval import PoseIndex
from test_retrieval_cli import FakePipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No weight file anywhere: the pack's folder is an empty tmp folder."""
    pack = tmp_path / "pack"
    pack.mkdir()
    monkeypatch.setattr(W, "PACK_WEIGHTS_DIR", pack)
    return pack


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(path)
    return path


def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def usage_error(capsys, argv) -> str:
    """The argparse error of ``argv``: exit status 2, one line."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return one_error_line(capsys.readouterr().err)


# ------------------------------------------------------------------ one line, the documented status


def test_an_unknown_weights_kind_is_one_usage_line(capsys):
    line = usage_error(capsys, ["weights", "download", "bogus"])
    assert "invalid choice: 'bogus'" in line and "feat_match+data" in line and "--help" in line


def test_a_bad_number_is_one_usage_line(capsys, image, tmp_path):
    line = usage_error(capsys, ["annotate", str(image), "--out", str(tmp_path / "o"), "--batch-size", "0"])
    assert "--batch-size" in line and ">= 1" in line


@pytest.mark.parametrize("device, available, count, expected", [
    ("gpu", True, 1, "'gpu' is not a device name; use cpu, cuda"),
    ("cuda", False, 0, "no CUDA device on this machine"),
    ("cuda:3", True, 1, "this machine has 1 CUDA device(s), numbered from 0; use cuda:0 to cuda:0"),
])
def test_a_wrong_device_is_one_line_before_any_weights(capsys, monkeypatch, no_weights, image, tmp_path,
                                                       device, available, count, expected):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    rc = main(["annotate", str(image), "--out", str(tmp_path / "o"), "--offline", "--device", device])
    assert rc == 2
    assert expected in one_error_line(capsys.readouterr().err)  # not the missing weights: checked first


def test_skipping_every_model_is_a_usage_error(capsys, image, tmp_path):
    out = tmp_path / "o"
    rc = main(["annotate", str(image), "--out", str(out), "--skip", "segment", "--skip", "tag", "--skip", "pose"])
    assert rc == 2
    assert "--skip leaves no model to run" in one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_warnings_are_one_line_without_source(tmp_path):
    code = ("import sys, warnings\n"
            "import illustpose.cli.weights as w\n"
            "w._list = lambda args: warnings.warn('careful') or 0\n"
            "from illustpose.cli import main\n"
            "sys.exit(main(['weights', 'list']))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "warning: careful\n"


# ------------------------------------------------------------------ missing weights: all at once


def test_every_missing_file_of_the_run_in_one_message(capsys, no_weights, image, tmp_path):
    extra = tmp_path / "models"
    rc = main(["annotate", str(image), "--out", str(tmp_path / "o"), "--offline", "--weights-dir", str(extra)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1
    assert "No weights for 'segmenter', 'tagger', 'feat_match+data' were found" in err
    for name in ("segmenter.pth", "tagger.pth", "feat_match+data.ckpt", str(extra), str(no_weights)):
        assert name in err
    assert f"python -m illustpose weights download segmenter tagger feat_match+data --weights-dir {extra}" in err
    assert "--segmenter PATH, --tagger PATH, --pose PATH" in err and "--weights-dir DIR" in err


def test_a_wrong_path_and_missing_files_in_one_message(capsys, no_weights, image, tmp_path):
    rc = main(["annotate", str(image), "--out", str(tmp_path / "o"), "--skip", "tag",
               "--pose", str(tmp_path / "typo.ckpt")])  # online: yet nothing may be downloaded
    assert rc == 2
    err = capsys.readouterr().err
    assert "typo.ckpt does not exist" in err and "No weights for 'segmenter' were found" in err
    assert "nothing was downloaded because of the wrong path above" in err


@pytest.fixture
def unreachable(monkeypatch):
    """Online, but every download host refuses connections at once (nothing listens on port 9)."""
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    drive = dataclasses.replace(registry.DRIVE_ZIP, folder_url="http://127.0.0.1:9/drive/folder")
    monkeypatch.setattr(registry, "DRIVE_ZIP", drive)
    monkeypatch.setattr(W, "DRIVE_ZIP", drive)

    def no_retries(*a, **k):
        raise AssertionError("a download was tried although its host is unreachable")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_retries)


class _no_warning:
    """Fails if a warning (e.g. a fallback notice repeating the error) is emitted inside."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._log = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        assert not self._log, [str(w.message) for w in self._log]


@pytest.mark.parametrize("command", [["annotate", "IMAGE", "--out", "OUT"],
                                     ["weights", "download", "segmenter", "tagger", "feat_match+data"]])
def test_an_unreachable_network_fails_fast_and_says_so_once(capsys, no_weights, unreachable, image, tmp_path,
                                                            command):
    argv = [str(image) if a == "IMAGE" else str(tmp_path / "o") if a == "OUT" else a for a in command]
    start = time.monotonic()
    with _no_warning():
        rc = main(argv)
    assert time.monotonic() - start < 15  # the probe waits a few seconds at most, without retries
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1
    assert err.count("the network seems unreachable: no connection to 127.0.0.1:9 (") == 1
    assert err.count("127.0.0.1:9 (") == 1  # each host named once
    assert "python -m illustpose weights download segmenter tagger feat_match+data" in err


# ------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_in_annotate_reports_progress(capsys, monkeypatch, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (20, 20), (i, 0, 0)).save(folder / f"{i}.png")
    calls = []

    class Pipe:
        pose = None

        def prepare(self, image):
            return SimpleNamespace(image=image)

        def annotate(self, images):
            calls.append(images)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return [SimpleNamespace(poses=None) for _ in images]

    written = []
    monkeypatch.setattr(cli_pipeline, "build_pipeline", lambda args, tasks: Pipe())
    monkeypatch.setattr("illustpose.outputs.write_annotation", lambda stem, *a, **k: written.append(stem) or [])
    rc = main(["annotate", str(folder), "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 130 and len(written) == 1
    assert one_error_line(capsys.readouterr().err) == "interrupted after 1 of 3 images; the files of those are written"


def test_ctrl_c_in_index_build_commits_what_it_has(capsys, monkeypatch, tmp_path):
    folder = tmp_path / "refs"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (64, 48), (i, 10, 20)).save(folder / f"{i}.png")
    fake = FakePipeline()

    def estimate(image):
        if fake.calls == 3:
            raise KeyboardInterrupt
        fake.calls += 1
        return fake.pose_for(image)

    fake.estimate = estimate
    monkeypatch.setattr(cli_pipeline, "build_pipeline", lambda args, tasks: fake)
    index = tmp_path / "i.sqlite"
    rc = main(["index", "build", str(index), str(folder), "--quiet", "--commit-every", "16"])
    assert rc == 130
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("interrupted after 3 of 5 files;") and "3 new, 3 entries" in line
    with PoseIndex(index) as ix:
        assert len(ix) == 3  # the open transaction was committed, not lost


# ------------------------------------------------------------------ consistency of the commands


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_option_and_positional_has_help_and_no_markup():
    for parser in _parsers(_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"{parser.prog}: {action.option_strings or action.dest} has no help"
        text = parser.format_help()
        for markup in ("``", ":func:", ":mod:", ":class:", ":meth:", ":data:"):
            assert markup not in text, f"{parser.prog} --help shows {markup}"


def test_version(capsys):
    from illustpose import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"illustpose {__version__}"


def test_recursion_and_batch_size_mean_the_same_everywhere():
    p = _parser()
    walkers = (["annotate", "x", "--out", "o"], ["index", "build", "i.sqlite", "d"], ["index", "add", "i.sqlite", "d"])
    for argv in walkers:
        assert p.parse_args(argv).recursive is True
        assert p.parse_args([*argv, "--no-recursive"]).recursive is False
    for parser in _parsers(p):
        for action in parser._actions:
            if "--batch-size" in action.option_strings:
                assert action.help.startswith("images per forward pass"), parser.prog
    assert p.parse_args(["index", "add", "i.sqlite", "d", "--commit-every", "4"]).commit_every == 4
    evaluate = ["eval", "--annotations", "gt.json"]
    assert p.parse_args([*evaluate, "--model", "feat_concat"]).pose_model == "feat_concat"
    assert p.parse_args([*evaluate, "--pose-model", "feat_concat"]).pose_model == "feat_concat"


def test_weights_list_shows_presence_folders_and_defaults(capsys, no_weights, tmp_path):
    extra = tmp_path / "models"
    extra.mkdir()
    (extra / "segmenter.pth").write_bytes(b"x")
    assert main(["weights", "list", "--weights-dir", str(extra)]) == 0
    out = capsys.readouterr().out
    assert f"  {extra}\n  {no_weights}\n" in out
    assert f"segmenter (the default segment weights): uses {extra / 'segmenter.pth'}" in out
    assert "feat_match+data (the default pose weights): missing" in out
    assert "\nfeat_match: missing" in out
    assert "  present  segmenter.pth  (" in out and "  missing  tagger.pth  (" in out


def test_an_index_sqlite_cannot_open_is_one_line(capsys, monkeypatch, tmp_path):
    import sqlite3

    def refuse(*a, **k):  # what SQLite says in a folder the user may not write to
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr("illustpose.retrieval.PoseIndex", refuse)
    rc = main(["index", "build", str(tmp_path / "i.sqlite"), str(tmp_path)])
    assert rc == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(tmp_path / "i.sqlite") in line and "unable to open database file" in line
