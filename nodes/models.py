"""Model loader nodes: one per registry task, each giving a loaded detector to the processing nodes.

Weight files live in ``ComfyUI/models/illustpose/`` (registered with ``folder_paths`` as
``illustpose``, so ``extra_model_paths.yaml`` can add folders).  "auto" finds the task's default
weights there, in the pack's ``weights/`` folder, or downloads them into the first
``illustpose`` folder (:func:`illustpose.weights.resolve`); a task with several architectures
offers ``auto: <weights>`` for each other one.  Loaded detectors are cached by file, device and
precision.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import comfy.model_management as mm
import folder_paths

from illustpose.detector import PRECISIONS, resolve_precision
from illustpose.errors import WeightsNotFoundError
from illustpose.registry import architecture_weights, architectures, default_weights, get_task
from illustpose.weights import resolve

from ._api import POSE_MODEL, SEGMENTER, TAGGER, io
from ._common import reports_errors

FOLDER = "illustpose"
AUTO = "auto"
WEIGHT_SUFFIXES = (".safetensors", ".sft", ".pth", ".ckpt", ".pt")
CACHE_SIZE = 4  # detectors kept loaded (on the offload device) between runs

folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))
_cache: OrderedDict = OrderedDict()


def auto_choices(task: str) -> list[str]:
    """``auto`` (the task's default weights), then ``auto: <weights>`` for each other architecture."""
    return [AUTO] + [f"{AUTO}: {architecture_weights(a).name}" for a in architectures(task)[1:]]


def weight_choices(task: str) -> list[str]:
    """The dropdown: the automatic choices, then every weight file in the ``illustpose`` model folders."""
    return auto_choices(task) + [f for f in folder_paths.get_filename_list(FOLDER)
                                 if f.lower().endswith(WEIGHT_SUFFIXES)]


def load_detector(task: str, weights: str, precision: str):
    """The detector of ``task`` for a dropdown choice at a compute precision, loaded once per
    (file, device, precision) and cached.

    Raises:
        WeightsNotFoundError: the file is gone, or "auto" found nothing and could not download
            (the message lists what to get and where to put it).
        CheckpointError: the file is damaged or holds another model.
    """
    dirs = folder_paths.get_folder_paths(FOLDER)
    precision = resolve_precision(precision, mm.get_torch_device())
    record = default_weights(task)
    if weights == AUTO:
        path = str(resolve(record.name, search_dirs=dirs))
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
    key = (task, os.path.realpath(path), stat.st_mtime_ns, stat.st_size, str(device), precision)
    if key not in _cache:
        _cache[key] = record.detector_class.from_pretrained(path, search_dirs=dirs, device=device,
                                                            precision=precision)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    _cache.move_to_end(key)
    return _cache[key]


class _Loader(io.ComfyNode):
    """A loader node for one registry task; subclasses name the task and the node."""

    TASK = ""
    NODE_ID = ""
    DISPLAY_NAME = ""
    DESCRIPTION = ""
    OUTPUT = None
    OUTPUT_NAME = ""
    OUTPUT_TOOLTIP = ""

    @classmethod
    def define_schema(cls):
        noun = get_task(cls.TASK).noun
        others = ", ".join(f"'{c}'" for c in auto_choices(cls.TASK)[1:])
        return io.Schema(
            node_id=cls.NODE_ID,
            display_name=cls.DISPLAY_NAME,
            category="illustpose/models",
            description=cls.DESCRIPTION,
            inputs=[
                io.Combo.Input("weights", options=weight_choices(cls.TASK), default=AUTO, tooltip=(
                    f"The {noun} weight file, from ComfyUI/models/illustpose. '{AUTO}' uses the default file "
                    f"({default_weights(cls.TASK).name}) there or in the pack's weights folder, downloading it "
                    "into models/illustpose when missing" + (f"; {others} the other architectures'." if others
                                                             else "."))),
                io.Combo.Input("precision", options=[AUTO, *PRECISIONS], default=AUTO, tooltip=(
                    "fp32 computes exactly as the reference. bf16 and fp16 keep the weights in half precision "
                    "(half the memory) and run faster, with slightly different results: fp16 on CUDA GPUs, bf16 "
                    f"on CPUs with bf16 support (fp16 on a CPU is slow). '{AUTO}': fp16 on a CUDA GPU, fp32 "
                    "otherwise.")),
            ],
            outputs=[cls.OUTPUT.Output(display_name=cls.OUTPUT_NAME, tooltip=cls.OUTPUT_TOOLTIP)],
        )

    @classmethod
    @reports_errors
    def execute(cls, weights, precision):
        return io.NodeOutput(load_detector(cls.TASK, weights, precision))


class LoadCharacterSegmenter(_Loader):
    TASK, NODE_ID = "segment", "LoadCharacterSegmenter|illustpose"
    DISPLAY_NAME = "Load Character Segmenter (illustpose)"
    DESCRIPTION = "Loads the character segmenter (DeepLabv3-ResNet101) of bizarre-pose-estimator."
    OUTPUT, OUTPUT_NAME = SEGMENTER, "segmenter"
    OUTPUT_TOOLTIP = "The loaded segmenter, for Character Segment and Illustrated Pose."


class LoadDanbooruTagger(_Loader):
    TASK, NODE_ID, DISPLAY_NAME = "tag", "LoadDanbooruTagger|illustpose", "Load Danbooru Tagger (illustpose)"
    DESCRIPTION = ("Loads the Danbooru tagger (ResNet-50) of bizarre-pose-estimator with its tag names "
                   "(stored in converted files, else read from tags.txt beside the weights).")
    OUTPUT, OUTPUT_NAME, OUTPUT_TOOLTIP = TAGGER, "tagger", "The loaded tagger, for Danbooru Tag."


class LoadPoseEstimator(_Loader):
    TASK, NODE_ID, DISPLAY_NAME = "pose", "LoadPoseEstimator|illustpose", "Load Pose Estimator (illustpose)"
    DESCRIPTION = ("Loads the illustrated-character pose estimator of bizarre-pose-estimator: feat_match "
                   f"('{AUTO}', {default_weights('pose').name}) or the slower feat_concat with its Keypoint R-CNN "
                   f"('{auto_choices('pose')[1]}').")
    OUTPUT, OUTPUT_NAME, OUTPUT_TOOLTIP = POSE_MODEL, "pose_model", "The loaded pose estimator, for Illustrated Pose."


NODES = [LoadCharacterSegmenter, LoadDanbooruTagger, LoadPoseEstimator]
