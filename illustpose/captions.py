"""LoRA captions in place: ``NAME.txt`` beside each image, as the reference's
``_scripts/danbooru_tagger_lora.py`` writes them.

The caption of an image is the prefix (if any) then its tags with score >= the threshold,
highest first (:func:`illustpose.outputs.caption`), joined by ``", "``, with no trailing
newline.  Modes: ``overwrite`` replaces an existing file, ``skip`` leaves it alone (and the
image is not even tagged), ``append`` adds to it after ``", "``.

Deliberate differences from the reference script, each where it has a bug or a gap:

* ``--recursive`` there is ``store_false``, so passing it turns recursion *off*, and its
  non-recursive branch cannot run (it unpacks a list of three items as ``os.walk`` tuples).
  Here folders are walked recursively unless ``--no-recursive`` is given, and that works.
* Its extensions match case-sensitively (``.PNG`` is skipped); here case does not matter.
* The prefix has surrounding spaces and commas stripped (``"art, "`` would otherwise give
  ``"art, , tag"``), as the Save Captions node does.
* ``append`` there adds the whole new caption, prefix included, to whatever the file holds, so
  a second run repeats every tag; here only the items (prefix, tags) not already in the file
  are added, and a file ending in a newline is joined without one.
* Files are written atomically (:func:`illustpose.fileio.write_text`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from .errors import ImageError
from .fileio import write_text

__all__ = ["CAPTION_MODES", "REFERENCE_FORMATS", "DEFAULT_FORMATS", "caption_line", "merge_captions",
           "write_caption", "caption_jobs"]

#: what to do with an existing caption file
CAPTION_MODES = ("overwrite", "append", "skip")
#: the reference script's ``--formats`` default
REFERENCE_FORMATS = ("jpg", "png", "jpeg", "tga")
#: ours: the reference's, and the other formats generated art comes in
DEFAULT_FORMATS = (*REFERENCE_FORMATS, "webp", "bmp")
_OWN_OUTPUTS = (".mask.png", ".cutout.png", ".pose.png", ".openpose.png")


def caption_line(prefix: str, tags: str) -> str:
    """``prefix`` (spaces and commas around it stripped) and the ``", "``-joined ``tags``, joined
    by ``", "``; either may be empty.  The one rule for the ``caption`` command and the Save
    Captions node."""
    return ", ".join(t for t in (prefix.strip(" ,"), tags) if t)


def _items(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def merge_captions(existing: str, new: str) -> str:
    """``existing`` followed by the items of ``new`` (comma-separated) it does not hold yet.

    Items compare after stripping spaces; ``existing`` keeps its text, less trailing white
    space (a final newline).
    """
    have = set(_items(existing))
    added = [t for t in _items(new) if t not in have]
    return ", ".join(t for t in (existing.rstrip(), ", ".join(added)) if t)


def write_caption(path: str | os.PathLike, text: str, mode: str = "overwrite") -> bool:
    """Write ``text`` to the caption file ``path`` (UTF-8, no trailing newline, atomically).

    Args:
        mode: one of :data:`CAPTION_MODES`: ``overwrite``, ``append`` (:func:`merge_captions`
            with the existing file), ``skip`` (an existing file is left as it is).

    Returns:
        True when the file was written, False when ``skip`` left an existing one alone.

    Raises:
        ValueError: an unknown mode.
        OSError: the file cannot be read or written.
    """
    if mode not in CAPTION_MODES:
        raise ValueError(f"caption mode must be one of {', '.join(CAPTION_MODES)}, got {mode!r}")
    path = Path(path)
    if path.exists():
        if mode == "skip":
            return False
        if mode == "append":
            text = merge_captions(path.read_text(encoding="utf-8"), text)
    write_text(path, text)
    return True


def caption_jobs(inputs: Iterable[str | os.PathLike], *, formats: Iterable[str] = DEFAULT_FORMATS,
                 recursive: bool = True, extension: str = "txt") -> Iterator[tuple[Path, Path]]:
    """``(image, caption file)`` pairs: each image of ``inputs`` whose extension is one of
    ``formats`` (case-insensitive), with ``NAME.<extension>`` beside it.

    Folders are walked in sorted order (sub-folders too when ``recursive``); files given
    explicitly count whatever their extension.  illustpose's own outputs (``*.mask.png``, ...)
    are skipped.  ``NAME`` is the file name less its last extension, as the reference's
    ``fnstrip`` (``a.b.png`` -> ``a.b.txt``).

    Raises:
        ImageError: an input that does not exist.
    """
    suffixes = tuple("." + f.lower().lstrip(".") for f in formats)
    ext = extension.lstrip(".")
    for item in inputs:
        p = Path(item)
        if p.is_file():
            yield p, p.with_name(f"{p.stem}.{ext}")
        elif p.is_dir():
            for f in sorted(p.rglob("*") if recursive else p.glob("*")):
                name = f.name.lower()
                if f.is_file() and name.endswith(suffixes) and not name.endswith(_OWN_OUTPUTS):
                    yield f, f.with_name(f"{f.stem}.{ext}")
        else:
            raise ImageError(f"{p}: no such file or folder")
