"""Exceptions raised by illustpose.

Every error the library raises on bad input derives from :class:`IllustposeError`, so
the CLI and the ComfyUI nodes can catch exactly these and show one clear line instead
of a traceback.  Messages follow one template: what is wrong, where (file / argument),
expected vs got, and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "IllustposeError",
    "CheckpointError",
    "UnsafeCheckpointError",
    "WrongModelError",
    "WeightsNotFoundError",
    "ImageError",
    "PoseIndexError",
]


class IllustposeError(Exception):
    """Base class of every error raised deliberately by illustpose."""


class CheckpointError(IllustposeError):
    """A weight file is unreadable, truncated, of an unknown format, or has wrong keys/shapes."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled checkpoint asked to import a global outside the allow-list.

    Nothing from the file was executed; the message names the refused global.
    """


class WrongModelError(CheckpointError):
    """A checkpoint holds a different model than the one asked for (e.g. a tagger given as pose)."""


class WeightsNotFoundError(IllustposeError):
    """Weight files are missing locally and could not (or may not) be downloaded."""


class ImageError(IllustposeError):
    """An input image cannot be read or has an unsupported layout."""


class PoseIndexError(IllustposeError):
    """A pose index file is corrupt, foreign, empty, or built with another descriptor."""
