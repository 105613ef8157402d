"""Atomic writes and hashing (illustpose.fileio): files get the umask's mode, never half-written."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from illustpose.fileio import atomic_path, sha256_file, write_bytes, write_text


@pytest.fixture
def umask():
    """Set a umask for the test, restore the old one after."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_to(mask):
        os.umask(mask)

    yield set_to
    os.umask(saved)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_get_the_mode_a_normally_created_file_gets(tmp_path, umask, mask, mode):
    umask(mask)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = write_text(tmp_path / "sub" / "atomic.txt", "héllo")
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == mode
    assert written.read_text(encoding="utf-8") == "héllo"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_bytes(tmp_path / "a.bin", b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_writers_that_open_by_name_replace_the_file(tmp_path):
    target = tmp_path / "x.txt"
    for text in ("first", "second, longer"):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".x.txt.") and tmp.exists()
            with open(tmp, "w") as f:
                f.write(text)
        assert target.read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_sha256_file_reads_in_blocks(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)
    path = write_bytes(tmp_path / "big.bin", data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
