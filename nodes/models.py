"""Model loader nodes: one per model, each giving a loaded detector to the processing nodes.

Weight files live in ``ComfyUI/models/illustpose/`` (registered with ``folder_paths`` as
``illustpose``, so ``extra_model_paths.yaml`` can add folders).  "auto" finds the default file
there, in the pack's ``weights/`` folder, or downloads it into the first ``illustpose`` folder
(:func:`illustpose.weights.resolve`).  Loaded detectors are cached by file, device and precision.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import comfy.model_management as mm
import folder_paths

from illustpose.detector import PRECISIONS
from illustpose.errors import WeightsNotFoundError
from illustpose.pose import PoseEstimator
from illustpose.segment import CharacterSegmenter
from illustpose.tag import DanbooruTagger
from illustpose.weights import resolve

from ._api import POSE_MODEL, SEGMENTER, TAGGER, io
from ._common import reports_errors

FOLDER = "illustpose"
AUTO = "auto"
WEIGHT_SUFFIXES = (".safetensors", ".sft", ".pth", ".ckpt", ".pt")
CACHE_SIZE = 4  # detectors kept loaded (on the offload device) between runs

folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))
_cache: OrderedDict = OrderedDict()


def weight_choices() -> list[str]:
    """The dropdown: "auto", then every weight file in the ``illustpose`` model folders."""
    return [AUTO] + [f for f in folder_paths.get_filename_list(FOLDER) if f.lower().endswith(WEIGHT_SUFFIXES)]


def load_detector(detector_cls, weights: str, precision: str):
    """The detector for a dropdown choice at a compute precision, loaded once per (file, device,
    precision) and cached.

    Raises:
        WeightsNotFoundError: the file is gone, or "auto" found nothing and could not download
            (the message lists what to get and where to put it).
        CheckpointError: the file is damaged or holds another model.
    """
    dirs = folder_paths.get_folder_paths(FOLDER)
    if weights == AUTO:
        path = str(resolve(detector_cls.default_weights, search_dirs=dirs))
    else:
        path = folder_paths.get_full_path(FOLDER, weights)
        if path is None:
            raise WeightsNotFoundError(
                f"weights {weights!r} are no longer in the illustpose model folders ({', '.join(dirs)}); "
                f"put the file back, pick another file, or pick {AUTO!r}")
    stat = os.stat(path)
    device = mm.unet_offload_device()
    key = (detector_cls.__name__, os.path.realpath(path), stat.st_mtime_ns, stat.st_size, str(device), precision)
    if key not in _cache:
        _cache[key] = detector_cls.from_pretrained(path, search_dirs=dirs, device=device, precision=precision)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    _cache.move_to_end(key)
    return _cache[key]


def _inputs(model: str) -> list:
    return [
        io.Combo.Input("weights", options=weight_choices(), default=AUTO, tooltip=(
            f"The {model} weight file, from ComfyUI/models/illustpose. '{AUTO}' uses the default file there "
            "(or in the pack's weights folder), downloading it into models/illustpose when missing.")),
        io.Combo.Input("precision", options=list(PRECISIONS), default="fp32", tooltip=(
            "fp32 computes exactly as the reference; bf16 and fp16 run under autocast, faster on recent "
            "GPUs but with slightly different results.")),
    ]


class LoadCharacterSegmenter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LoadCharacterSegmenter|illustpose",
            display_name="Load Character Segmenter (illustpose)",
            category="illustpose/models",
            description="Loads the character segmenter (DeepLabv3-ResNet101) of bizarre-pose-estimator.",
            inputs=_inputs("segmenter"),
            outputs=[SEGMENTER.Output(display_name="segmenter",
                                      tooltip="The loaded segmenter, for Character Segment and Illustrated Pose.")],
        )

    @classmethod
    @reports_errors
    def execute(cls, weights, precision):
        return io.NodeOutput(load_detector(CharacterSegmenter, weights, precision))


class LoadDanbooruTagger(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LoadDanbooruTagger|illustpose",
            display_name="Load Danbooru Tagger (illustpose)",
            category="illustpose/models",
            description="Loads the Danbooru tagger (ResNet-50) of bizarre-pose-estimator with its tag names "
                        "(stored in converted files, else read from tags.txt beside the weights).",
            inputs=_inputs("tagger"),
            outputs=[TAGGER.Output(display_name="tagger", tooltip="The loaded tagger, for Danbooru Tag.")],
        )

    @classmethod
    @reports_errors
    def execute(cls, weights, precision):
        return io.NodeOutput(load_detector(DanbooruTagger, weights, precision))


class LoadPoseEstimator(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LoadPoseEstimator|illustpose",
            display_name="Load Pose Estimator (illustpose)",
            category="illustpose/models",
            description="Loads the illustrated-character pose estimator (feat_match) of bizarre-pose-estimator; "
                        f"'{AUTO}' picks feat_match+data.",
            inputs=_inputs("pose estimator"),
            outputs=[POSE_MODEL.Output(display_name="pose_model",
                                       tooltip="The loaded pose estimator, for Illustrated Pose.")],
        )

    @classmethod
    @reports_errors
    def execute(cls, weights, precision):
        return io.NodeOutput(load_detector(PoseEstimator, weights, precision))


NODES = [LoadCharacterSegmenter, LoadDanbooruTagger, LoadPoseEstimator]
