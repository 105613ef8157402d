"""Writing files so that nothing is ever half-written, and hashing them.

Every file illustpose writes (masks, tags, pose JSON, converted weights, COCO exports, files
extracted from the authors' zip, ComfyUI outputs) goes through :func:`atomic_path`:

* the data is written to a temporary file in the target's own folder (so the final rename
  never crosses file systems), named ``.<name>.<random>.tmp``;
* the temporary file is created the way ``open(path, "w")`` creates a file, so its mode is
  ``0o666`` minus the process umask (``-rw-r--r--`` under the usual umask 022), not the
  ``0o600`` of :func:`tempfile.mkstemp`: a dataset read by another user, a trainer in a
  container or a web server just works;
* it is flushed to disk (``fsync``), renamed over the target (``os.replace``, atomic on POSIX
  and Windows), and the folder entry is synced where the OS allows it;
* on any error, or Ctrl-C, the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "write_bytes", "write_text", "sha256_file"]

_CHUNK = 1 << 20


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows, or a file system that refuses it
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on success it replaces ``path``.

    The target's folder is created if missing.  The temporary file already exists (empty,
    mode from the umask) when the block starts; write it by name (``img.save(tmp)``,
    ``open(tmp, "w")``), which keeps that mode (a writer that replaces the file instead, as
    ``safetensors.torch.save_file`` 0.8 does with mode 0600, needs the mode put back).
    Readers of ``path`` see the old file or the complete new one, never a partial write.

    Raises:
        whatever the block raises (the temporary file is removed first), or ``OSError`` if
        the folder cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # mode = 0o666 & ~umask
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`); returns ``path`` as a Path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (:func:`atomic_path`); returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike) -> str:
    """Lower-case hex sha256 of a file's bytes, read in 1 MiB blocks (any size, bounded memory).

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()
