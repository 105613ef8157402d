"""Every exception illustpose raises on purpose, in one place.

Each error the library raises on bad input derives from :class:`IllustposeError`, so the CLI
and the ComfyUI nodes catch exactly these and show one clear line instead of a traceback.
Messages follow one template: what is wrong, where (file / argument / field), expected vs
got, and what to do about it.  Errors about values the caller passed also derive from
``ValueError``.
"""

from __future__ import annotations

__all__ = [
    "IllustposeError",
    "CheckpointError",
    "UnsafeCheckpointError",
    "WrongModelError",
    "WeightsNotFoundError",
    "ImageError",
    "KeypointError",
    "PoseFormatError",
    "RenderError",
    "DatasetError",
    "MetricInputError",
    "EvaluationError",
    "PoseIndexError",
    "DeviceError",
    "UsageError",
    "RunRecordError",
    "CharacterError",
    "FinetuneError",
]


class IllustposeError(Exception):
    """Base class of every error raised deliberately by illustpose."""


class CheckpointError(IllustposeError):
    """A weight file is unreadable, truncated, of an unknown format, or has wrong keys/shapes."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled weight file asked to import a global outside the allow-list.

    Nothing from the file was executed; the message names the refused global.
    """


class WrongModelError(CheckpointError):
    """A checkpoint holds a different model than the one asked for (e.g. a tagger given as pose)."""


class WeightsNotFoundError(IllustposeError):
    """Weight files are missing locally and could not (or may not) be downloaded."""


class ImageError(IllustposeError):
    """An input image cannot be read or has an unsupported layout."""


class KeypointError(IllustposeError, ValueError):
    """A keypoint array or COCO annotation has the wrong shape, dtype or values."""


class PoseFormatError(KeypointError):
    """A POSE_KEYPOINT value (list of frame dicts, one frame dict, or its JSON) is malformed."""


class RenderError(IllustposeError, ValueError):
    """A drawing parameter (canvas size, resolution, widths) is invalid."""


class DatasetError(IllustposeError, ValueError):
    """A dataset file is missing, not JSON, or has a malformed field (the message names both)."""


class MetricInputError(IllustposeError, ValueError):
    """Arrays given to a metric have a wrong shape or values, or pycocotools is missing."""


class EvaluationError(IllustposeError, ValueError):
    """Predictions do not fit the ground truth, or the ground truth cannot be scored."""


class PoseIndexError(IllustposeError):
    """A pose index file is corrupt, foreign, empty, or built with another descriptor."""


class DeviceError(IllustposeError, ValueError):
    """A device name is not one PyTorch knows (``gpu``), or names hardware this machine lacks
    (``cuda`` without a CUDA GPU, ``cuda:3`` on a one-GPU machine)."""


class UsageError(IllustposeError, ValueError):
    """Command-line arguments that cannot work together (e.g. every model skipped)."""


class RunRecordError(IllustposeError):
    """A run record (``.illustpose-runs.sqlite``, what a resumable run finished) cannot be used."""


class CharacterError(IllustposeError, ValueError):
    """Character boxes or masks given by the user are malformed, or a character split setting
    (``characters``, ``min_area``) is out of range."""


class FinetuneError(IllustposeError, ValueError):
    """Fine-tuning cannot start or go on: no usable training annotation, settings the base
    weights cannot train with, or a ``--resume`` state of another run."""
