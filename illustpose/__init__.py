"""illustpose: the illustrated-character models of Chen & Zwicker (WACV 2022) as a library.

Segmenter (character mask + bbox), Danbooru tagger, and pose estimator (COCO-17 keypoints),
ported faithfully from the reference implementation "bizarre-pose-estimator"::

    from illustpose import Pipeline, CharacterSegmenter, PoseEstimator, load_image

    pipe = Pipeline(CharacterSegmenter.from_pretrained(), pose=PoseEstimator.from_pretrained())
    annotation = pipe.annotate([load_image("drawing.png")])[0]
    annotation.pose.keypoints  # (25, 2) x, y pixels

The names below are the public API; each is imported on first use, so ``import illustpose``
itself loads neither torch nor any model.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it
_API = {
    "Pipeline": "illustpose.pipeline",
    "Annotation": "illustpose.pipeline",
    "CharacterSegmenter": "illustpose.models.segmenter",
    "DanbooruTagger": "illustpose.models.tagger",
    "PoseEstimator": "illustpose.models.pose",
    "PoseIndex": "illustpose.retrieval.store",
    "load_image": "illustpose.images",
    "SegmentationResult": "illustpose.results",
    "TagResult": "illustpose.results",
    "PoseResult": "illustpose.results",
    "IllustposeError": "illustpose.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'illustpose' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
