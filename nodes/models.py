"""Model loader nodes: one per registry task, each giving a loaded detector to the processing nodes.

Weight files live in ``ComfyUI/models/illustpose/`` (registered with ``folder_paths`` as
``illustpose``, so ``extra_model_paths.yaml`` can add folders).  "auto" finds the task's default
weights there, in the pack's ``weights/`` folder, or downloads them into the first
``illustpose`` folder (:func:`illustpose.weights.resolve`); a task with several architectures
offers ``auto: <weights>`` for each other one.  Each loader lists only the files of its own task
(:func:`file_tasks`).

A loaded detector belongs to ComfyUI's memory manager (:func:`nodes._common.model_patcher`):
ComfyUI's node cache keeps it while the workflow uses it, and this module keeps only weak
references (one detector per file, device and precision while it lives), so ``POST /free``
with ``free_memory`` releases it.
"""

from __future__ import annotations

import os
import weakref
from pathlib import PurePosixPath

import comfy.model_management as mm
import folder_paths
from safetensors import SafetensorError, safe_open

from illustpose.detector import PRECISIONS, resolve_precision
from illustpose.errors import WeightsNotFoundError
from illustpose.registry import (
    architecture_weights, architectures, default_weights, get_task, list_weights, matching_architectures,
)
from illustpose.weights import resolve

from ._api import POSE_MODEL, SEGMENTER, TAGGER, io
from ._common import model_patcher, reports_errors

FOLDER = "illustpose"
AUTO = "auto"
WEIGHT_SUFFIXES = (".safetensors", ".sft", ".pth", ".ckpt", ".pt")
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")

folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))
_cache: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # (task, file, ..., precision) -> detector
_file_tasks: dict = {}  # realpath -> ((mtime_ns, size), tasks)


def auto_choices(task: str) -> list[str]:
    """``auto`` (the task's default weights), then ``auto: <weights>`` for each other architecture."""
    return [AUTO] + [f"{AUTO}: {architecture_weights(a).name}" for a in architectures(task)[1:]]


def _known_names() -> dict[str, str]:
    """Weight file names the registry knows -> their task: ``<weights>.safetensors`` and each known
    file's local names (the authors' zip paths, their base names, the Hugging Face names)."""
    names = {}
    for w in list_weights():
        names[f"{w.name}.safetensors"] = w.task
        names.update((n, w.task) for f in w.files for n in f.local_names())
    return names


def _read_tasks(path: str, name: str) -> frozenset:
    known = _known_names()
    for candidate in (name, PurePosixPath(name).name):
        if candidate in known:
            return frozenset({known[candidate]})
    if not name.lower().endswith(SAFETENSORS_SUFFIXES):
        return frozenset(w.task for w in list_weights())  # a pickle: unknown without unpickling it
    try:
        with safe_open(path, framework="pt") as f:  # reads the header only
            model, keys = (f.metadata() or {}).get("model"), list(f.keys())
    except (SafetensorError, OSError, ValueError):
        return frozenset()  # not a readable safetensors file: no loader can use it
    if model in architectures():
        return frozenset({architecture_weights(model).task})
    return frozenset(architecture_weights(a).task for a in matching_architectures(keys))


def file_tasks(name: str) -> frozenset:
    """The registry tasks whose loader lists the weight file ``name`` (relative to the
    ``illustpose`` model folders), decided without loading it: a file name the registry knows
    (``segmenter.pth``, ``feat_match+data.safetensors``, the authors' checkpoint names), else a
    safetensors header (its ``model`` metadata, else its key names); a ``.ckpt``/``.pth``/``.pt``
    with another name could hold any model, so every loader lists it.  Empty for a file no
    loader can use.  Cached per file while its mtime and size stay the same."""
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        return frozenset()
    st = os.stat(path)
    key, stamp = os.path.realpath(path), (st.st_mtime_ns, st.st_size)
    cached = _file_tasks.get(key)
    if cached is None or cached[0] != stamp:
        cached = _file_tasks[key] = (stamp, _read_tasks(path, name.replace(os.sep, "/")))
    return cached[1]


def task_files(task: str) -> list[str]:
    """The weight files in the ``illustpose`` model folders that ``task``'s loader lists."""
    return [f for f in folder_paths.get_filename_list(FOLDER)
            if f.lower().endswith(WEIGHT_SUFFIXES) and task in file_tasks(f)]


def weight_choices(task: str) -> list[str]:
    """The dropdown: the automatic choices, then the weight files of this task (:func:`task_files`)."""
    return auto_choices(task) + task_files(task)


def weights_path(task: str, weights: str) -> str:
    """The file a dropdown choice names (for ``auto``: found or downloaded by :func:`resolve`).

    Raises:
        WeightsNotFoundError: the file is gone, or "auto" found nothing and could not download
            (the message lists what to get and where to put it).
    """
    dirs = folder_paths.get_folder_paths(FOLDER)
    if weights == AUTO:
        return str(resolve(default_weights(task).name, search_dirs=dirs))
    if weights.startswith(AUTO + ": "):
        return str(resolve(weights[len(AUTO) + 2:], search_dirs=dirs))
    path = folder_paths.get_full_path(FOLDER, weights)
    if path is None:
        raise WeightsNotFoundError(
            f"weights {weights!r} are no longer in the illustpose model folders ({', '.join(dirs)}); "
            f"put the file back, pick another file, or pick {AUTO!r}")
    return path


def load_detector(task: str, weights: str, precision: str):
    """The detector of ``task`` for a dropdown choice at a compute precision, on ComfyUI's offload
    device and handed to its memory manager; one per (file, device, precision) while it lives.

    Raises:
        WeightsNotFoundError: see :func:`weights_path`.
        CheckpointError: the file is damaged or holds another model.
    """
    path = weights_path(task, weights)
    precision = resolve_precision(precision, mm.get_torch_device())
    stat = os.stat(path)
    device = mm.unet_offload_device()
    key = (task, os.path.realpath(path), stat.st_mtime_ns, stat.st_size, str(device), precision)
    detector = _cache.get(key)
    if detector is None:
        detector = default_weights(task).detector_class.from_pretrained(
            path, search_dirs=folder_paths.get_folder_paths(FOLDER), device=device, precision=precision)
        model_patcher(detector)
        _cache[key] = detector
    return detector


def loader_fingerprint(task: str, weights: str | None):
    """What a loader's result depends on: the chosen file's state, or for the automatic choices
    the state of every file of the task in the model folders (a new or replaced file may change
    what "auto" finds).  NaN (always re-run) for a file that is gone or a linked input."""
    if not isinstance(weights, str):
        return float("nan")
    names = task_files(task) if weights.startswith(AUTO) else [weights]
    state = []
    for name in names:
        path = folder_paths.get_full_path(FOLDER, name)
        if path is None:
            return float("nan")
        st = os.stat(path)
        state.append((name, st.st_mtime_ns, st.st_size))
    return state


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
                    f"The {noun} weight file, from ComfyUI/models/illustpose (files of the other models are not "
                    f"listed). '{AUTO}' uses the default file ({default_weights(cls.TASK).name}) there or in the "
                    "pack's weights folder, downloading it into models/illustpose when missing" + (
                        f"; {others} the other architectures'." if others else "."))),
                io.Combo.Input("precision", options=[AUTO, *PRECISIONS], default=AUTO, tooltip=(
                    "fp32 computes exactly as the reference. bf16 and fp16 keep the weights in half precision "
                    "(half the memory) and run faster, with slightly different results: fp16 on CUDA GPUs, bf16 "
                    f"on CPUs with bf16 support (fp16 on a CPU is slow). '{AUTO}': fp16 on a CUDA GPU, fp32 "
                    "otherwise.")),
            ],
            outputs=[cls.OUTPUT.Output(display_name=cls.OUTPUT_NAME, tooltip=cls.OUTPUT_TOOLTIP)],
        )

    @classmethod
    def fingerprint_inputs(cls, weights=None, precision=None):
        return loader_fingerprint(cls.TASK, weights)

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
