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


AUTO_FEAT_CONCAT = "auto: feat_concat+data"  # the pose loader's second automatic choice


def weight_choices(autos: tuple[str, ...] = (AUTO,)) -> list[str]:
    """The dropdown: the automatic choices, then every weight file in the ``illustpose`` model folders."""
    return list(autos) + [f for f in folder_paths.get_filename_list(FOLDER) if f.lower().endswith(WEIGHT_SUFFIXES)]


def resolve_precision(precision: str) -> str:
    """"auto" -> fp16 when ComfyUI computes on a CUDA GPU, else fp32 (exact)."""
    if precision != AUTO:
        return precision
    return "fp16" if mm.get_torch_device().type == "cuda" else "fp32"


def load_detector(detector_cls, weights: str, precision: str):
    """The detector for a dropdown choice at a compute precision, loaded once per (file, device,
    precision) and cached.

    Raises:
        WeightsNotFoundError: the file is gone, or "auto" found nothing and could not download
            (the message lists what to get and where to put it).
        CheckpointError: the file is damaged or holds another model.
    """
    dirs = folder_paths.get_folder_paths(FOLDER)
    precision = resolve_precision(precision)
    if weights == AUTO:
        path = str(resolve(detector_cls.default_weights, search_dirs=dirs))
    elif weights.startswith(AUTO + ": "):
        path = str(resolve(weights[len(AUTO) + 2:], search_dirs=dirs))
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


def _inputs(model: str, autos: tuple[str, ...] = (AUTO,)) -> list:
    return [
        io.Combo.Input("weights", options=weight_choices(autos), default=AUTO, tooltip=(
            f"The {model} weight file, from ComfyUI/models/illustpose. '{AUTO}' uses the default file there "
            "(or in the pack's weights folder), downloading it into models/illustpose when missing.")),
        io.Combo.Input("precision", options=[AUTO, *PRECISIONS], default=AUTO, tooltip=(
            "fp32 computes exactly as the reference. bf16 and fp16 keep the weights in half precision "
            "(half the memory) and run faster, with slightly different results: fp16 on CUDA GPUs, bf16 on "
            f"CPUs with bf16 support (fp16 on a CPU is slow). '{AUTO}': fp16 on a CUDA GPU, fp32 otherwise.")),
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
            description="Loads the illustrated-character pose estimator of bizarre-pose-estimator: feat_match "
                        f"('{AUTO}', feat_match+data) or the slower feat_concat with its Keypoint R-CNN "
                        f"('{AUTO_FEAT_CONCAT}').",
            inputs=_inputs("pose estimator", (AUTO, AUTO_FEAT_CONCAT)),
            outputs=[POSE_MODEL.Output(display_name="pose_model",
                                       tooltip="The loaded pose estimator, for Illustrated Pose.")],
        )

    @classmethod
    @reports_errors
    def execute(cls, weights, precision):
        return io.NodeOutput(load_detector(PoseEstimator, weights, precision))


NODES = [LoadCharacterSegmenter, LoadDanbooruTagger, LoadPoseEstimator]
