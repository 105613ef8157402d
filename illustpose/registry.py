"""The model registry: one record per released weights entry, and everything derived from it.

Each :class:`ModelWeights` record holds what illustpose knows about one weights entry of the
paper's release, in the manner of torchvision's ``Weights`` (``torchvision/models/_api.py``):
which task and architecture it is, the key prefix that recognises its files, the
hyper-parameters of the released checkpoint, its input transform, its category or keypoint
names, the builder of its network and the detector class that runs it, its known files
(names, sources, sizes, sha256) and a one-line description.  Facts about the files come from
``shared/reference/checkpoint-formats.md``; each file's ``notes`` say which are assumed.

Generated from these records, never written per model: checkpoint recognition
(:func:`detect_architecture`), the hyper-parameter defaults of files that carry none,
``weights convert``, the CLI's weight flags, ``weights list``, the ComfyUI loaders' ``auto``
choices, the weights table of ``weights/README.md`` and the pose crop constants.  Adding a
model is one new module under :mod:`illustpose.models` plus one record here
(``docs/architecture.md`` shows it), or :func:`register` from outside the package.

Importing this module imports neither torch nor any model: builders and detectors are named
by ``"module:attribute"`` and imported when first used.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from .keypoints import ALL_KEYPOINTS

__all__ = [
    "HF_REPO",
    "ANIMEPOSE_REPO",
    "RCNN_ZOO_URL",
    "DriveZip",
    "DRIVE_ZIP",
    "KnownFile",
    "SIZE_BASES",
    "FileOption",
    "Task",
    "TASKS",
    "ModelWeights",
    "WEIGHTS",
    "TAG_FILES",
    "POSE_CROP_SIZE",
    "POSE_CROP_PADDING",
    "register",
    "weights_kinds",
    "get_weights",
    "list_weights",
    "architectures",
    "architecture_weights",
    "default_weights",
    "detect_architecture",
    "matching_architectures",
    "get_task",
    "file_options",
    "known_files",
    "format_size",
]

#: The community repackaging on Hugging Face (segmenter, tagger and its tag list).
HF_REPO = "public-data/bizarre-pose-estimator-models"
#: ComfyUI-AnimePose's repackaging on Hugging Face (a segmenter, and a feat_concat+data head
#: without its Keypoint R-CNN); accepted where found, never downloaded.
ANIMEPOSE_REPO = "mrpm/ComfyUI-AnimePose-weights"
#: Where Detectron2's model zoo serves ``keypoint_rcnn_R_101_FPN_3x``: the R-CNN a head-only
#: feat_concat file (``--rcnn-weights``) needs.
RCNN_ZOO_URL = ("https://dl.fbaipublicfiles.com/detectron2/COCO-Keypoints/keypoint_rcnn_R_101_FPN_3x/"
                "138363331/model_final_997cc7.pkl")


@dataclass(frozen=True)
class DriveZip:
    """The authors' ``bizarre_pose_models.zip``: in their Google Drive folder (reference README),
    and on an unofficial Hugging Face mirror.

    Attributes:
        folder_url: the authors' Google Drive folder.
        zip_name: the zip's file name.
        size: its size in bytes (exact when ``sha256`` is known).
        notes: which facts are assumed.
        sha256: the pinned hex digest (the mirror's), None when unknown.
        hf_repo, hf_filename: the Hugging Face mirror's repo and file (None: no mirror).
    """

    folder_url: str
    zip_name: str
    size: int
    notes: str
    sha256: str | None = None
    hf_repo: str | None = None
    hf_filename: str | None = None

    @property
    def hf_url(self) -> str | None:
        """The mirror's ``resolve/main`` URL (None without a mirror)."""
        return f"https://huggingface.co/{self.hf_repo}/resolve/main/{self.hf_filename}" if self.hf_repo else None


DRIVE_ZIP = DriveZip(
    folder_url="https://drive.google.com/drive/folders/11bw47Vy-RPKjgd6yF0RzcXALvp7zB_wt",
    zip_name="bizarre_pose_models.zip",
    size=2_343_386_993,
    sha256="27d4eef72bfd7ca664ebbf59e4d6432ab6fe8b748679d76dc94ee0dbd4b99c4e",
    hf_repo="h54917/bizarre-pose-estimator",
    hf_filename="bizarre_pose_models.zip",
    notes="The authors' Google Drive folder (from the reference readme) and the unofficial Hugging Face "
          "mirror h54917/bizarre-pose-estimator. Size and sha256 exact, as the mirror publishes them; the "
          "file's place at the mirror's root is assumed. That the Drive copy is byte-identical is likely but "
          "unconfirmed: a mirror file that differs is refused, a Drive file that differs is used with a warning.",
)


def format_size(n: int | None) -> str:
    """``about 2.34 GB`` / ``about 103 MB`` / ``size unknown``: sizes in messages and tables."""
    if n is None:
        return "size unknown"
    return f"about {n / 1e9:.2f} GB" if n >= 1e9 else f"about {max(n / 1e6, 0.01):.3g} MB"


#: How a known file's ``size`` is known (:attr:`KnownFile.size_basis`).
SIZE_BASES = ("exact", "public", "computed", "assumed")


@dataclass(frozen=True)
class KnownFile:
    """One known file of the release, or of a repackaging of it.

    Attributes:
        name: the local file name (Hugging Face files) or the path inside
            ``bizarre_pose_models.zip`` (the authors' files, POSIX separators).
        kind: the :class:`ModelWeights` name it holds, or ``"tags"`` for a tag-name file.
        format: ``lightning``, ``hf_pth``, ``safetensors``, ``tags_txt`` or ``rules_json``.
        source: ``hf`` (file ``name`` of :data:`HF_REPO`), ``drive_zip`` (member ``name`` of
            :data:`DRIVE_ZIP`) or ``animepose`` (file ``name`` of :data:`ANIMEPOSE_REPO`:
            accepted where found, never downloaded).
        size: approximate size in bytes, None when unknown (messages only).
        sha256: exact hex digest, verified after download; None when unknown (then the
            digest of the first download is recorded beside the file).
        companions: names of files that must sit beside it (the tagger's tag names).
        notes: which facts about this file are assumed.
        size_basis: how ``size`` is known, one of :data:`SIZE_BASES`.
        requires: what loading it needs besides (an option's flag and file), "" if nothing.
    """

    name: str
    kind: str
    format: str
    source: str
    size: int | None
    notes: str
    sha256: str | None = None
    companions: tuple[str, ...] = ()
    size_basis: str = "assumed"
    requires: str = ""

    @property
    def repo_id(self) -> str | None:
        """The Hugging Face repo holding it (None for members of the zip)."""
        return {"hf": HF_REPO, "animepose": ANIMEPOSE_REPO}.get(self.source)

    @property
    def filename(self) -> str | None:
        """The file's name in its Hugging Face repo (None for members of the zip)."""
        return self.name if self.repo_id else None

    @property
    def zip_member(self) -> str | None:
        """The file's path inside the authors' zip (zip files only)."""
        return self.name if self.source == "drive_zip" else None

    @property
    def downloadable(self) -> bool:
        """Whether illustpose downloads it (``animepose`` files are only accepted where found)."""
        return self.source in ("hf", "drive_zip")

    @property
    def url(self) -> str:
        """Where a person gets it: the HF ``resolve/main`` URL, or the Drive folder."""
        if self.repo_id:
            return f"https://huggingface.co/{self.repo_id}/resolve/main/{self.name}"
        return DRIVE_ZIP.folder_url

    @property
    def basename(self) -> str:
        """The file's base name (``feat_match.ckpt``)."""
        return PurePosixPath(self.name).name

    def local_names(self) -> tuple[str, ...]:
        """Relative paths accepted in a folder: ``name``, then the base name if different."""
        return (self.name,) if self.basename == self.name else (self.name, self.basename)

    def size_text(self) -> str:
        """``about 233 MB (public)``, ``about 700 MB (assumed)``, ``size unknown``: for lists."""
        return format_size(self.size) + (f" ({self.size_basis})" if self.size is not None else "")

    def sha256_text(self) -> str:
        """``sha256 27d4eef72bfd...`` when pinned, else ``sha256 unknown``: for lists."""
        return f"sha256 {self.sha256[:12]}..." if self.sha256 else "sha256 unknown"

    def describe(self) -> str:
        """One line for error messages: name, size, where to get it."""
        if self.source == "hf":
            return f"{self.name} ({format_size(self.size)}) from {self.url}"
        if self.source == "animepose":
            needs = f"; loading it needs {self.requires}" if self.requires else ""
            return (f"{self.name} ({format_size(self.size)}), ComfyUI-AnimePose's copy from {self.url} "
                    f"(not downloaded automatically{needs})")
        z = DRIVE_ZIP
        mirror = f"the Hugging Face mirror https://huggingface.co/{z.hf_repo} or " if z.hf_repo else ""
        return (f"{self.basename} ({format_size(self.size)}): member '{self.name}' of "
                f"{z.zip_name} ({format_size(z.size)}) from {mirror}the Google Drive folder {self.url}")


@dataclass(frozen=True)
class FileOption:
    """A further file a model's loader takes: the CLI flag ``--<keyword with dashes>`` and the
    keyword argument of ``from_pretrained`` / ``from_checkpoint``."""

    keyword: str
    metavar: str
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.keyword.replace("_", "-")


@dataclass(frozen=True)
class Task:
    """What a family of models does; the CLI's ``--skip`` values and weight flags come from it.

    Attributes:
        name: ``segment``, ``tag`` or ``pose`` (``annotate --skip NAME``).
        flag: the weight-file flag's name (``--segmenter PATH``).
        noun: what the model is called in messages and dropdown tooltips.
    """

    name: str
    flag: str
    noun: str


TASKS: tuple[Task, ...] = (
    Task("segment", "segmenter", "character segmenter"),
    Task("tag", "tagger", "Danbooru tagger"),
    Task("pose", "pose", "pose estimator"),
)


def get_task(name: str) -> Task:
    """The :class:`Task` called ``name``.

    Raises:
        ValueError: an unknown task (the message lists them).
    """
    for t in TASKS:
        if t.name == name:
            return t
    raise ValueError(f"unknown task {name!r}; expected one of: {', '.join(t.name for t in TASKS)}")


def dotted_get(tree: Any, dotted: str) -> Any:
    """``tree["largs"]["bg_seg"]["size"]`` for ``"largs.bg_seg.size"``; None where a level is missing."""
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, Mapping) else None
    return tree


def _import(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class ModelWeights:
    """One released weights entry and the facts of its architecture.

    Attributes:
        name: the weights kind (``feat_match+data``): the registry key, the ``<name>.safetensors``
            file name looked for, ``weights download NAME``.
        task: a :data:`TASKS` name.
        architecture: the network (``segmenter``, ``tagger``, ``feat_match``, ``feat_concat``),
            stored as ``model`` in converted files; records of one architecture share every
            field below up to ``reference``.
        key_prefix: a state-dict key prefix only this architecture's files have (Lightning key
            names); :func:`detect_architecture` recognises files by it.
        builder: ``"module:function"``, ``function(checkpoint, weights, **options) -> nn.Module``:
            the network with the checkpoint's weights, loaded strictly (``weights`` is this record).
        detector: ``"module:Class"``, the :class:`~illustpose.detector.Detector` that runs it.
        transform: ``"module:function"`` making the network input from a PIL image, as the
            reference does (:mod:`illustpose.preprocess`).
        hparams: the released checkpoint's hyper-parameters that inference reads (nested
            dicts, ``{"largs": ..., "margs": ...}``); used for files that carry none.
        categories: names of the output classes, when fixed by the architecture.
        keypoint_names: names of the heatmap channels (pose): the head's size.
        reference: the reference file the architecture follows.
        description: one line for lists and docs.
        files: the known files of these weights, in download preference order.
        file_options: further files the loader takes (:class:`FileOption`).
        unused_prefixes: key prefixes of tensors the architecture never reads: loading skips
            them and ``weights convert`` leaves them out (feat_match's R-CNN, ~313 MB).
        preferred: these are the weights used when only the architecture is named (the
            ``+data`` pose weights; the only weights of the others).
    """

    name: str
    task: str
    architecture: str
    key_prefix: str
    builder: str
    detector: str
    transform: str
    hparams: Mapping[str, Any]
    reference: str
    description: str
    files: tuple[KnownFile, ...]
    categories: tuple[str, ...] = ()
    keypoint_names: tuple[str, ...] = ()
    file_options: tuple[FileOption, ...] = ()
    unused_prefixes: tuple[str, ...] = ()
    preferred: bool = True

    def build(self, checkpoint, **options):
        """Build this architecture's network from a checkpoint (see ``builder``)."""
        return _import(self.builder)(checkpoint, self, **options)

    @property
    def detector_class(self) -> type:
        """The detector class (imports its module, and torch, on first use)."""
        return _import(self.detector)

    def hparam(self, dotted: str) -> Any:
        """A released hyper-parameter such as ``"largs.bg_seg.size"``; None if not known."""
        return dotted_get(self.hparams, dotted)

    def own_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of ``options`` that are this architecture's further files and not None
        (another architecture's files, e.g. ``tags=`` for a pose file, are dropped)."""
        own = {o.keyword for o in self.file_options}
        return {k: v for k, v in options.items() if k in own and v is not None}


# --------------------------------------------------------------------------- the records

_RUNS = "_train/character_pose_estim/runs/"
_TAGGER_CKPT = ("_train/danbooru_tagger/runs/waning_kate_vulcan0001/checkpoints/"
                "epoch=0022-val_f2=0.4461-val_loss=0.0766.ckpt")
_SEGMENTER_CKPT = ("_train/character_bg_seg/runs/eyeless_alaska_vulcan0000/checkpoints/"
                   "epoch=0096-val_f1=0.9508-val_loss=0.0483.ckpt")
_RULES = "_data/danbooru/_filters/intently_combatively_rules.json"

#: The tagger's tag-name files (companions of the tagger's weight files).
TAG_FILES: tuple[KnownFile, ...] = (
    KnownFile("tags.txt", "tags", "tags_txt", "hf", None,
              "The tagger's 1062 class names, one per line, in output order. File name and format assumed."),
    KnownFile(_RULES, "tags", "rules_json", "drive_zip", None,
              "JSON list of 1062 rules; output i is rules[i]['name']. Its presence inside "
              "bizarre_pose_models.zip is assumed."),
)

_POSE_HPARAMS = {"largs": {"danbooru_coco": {"size": 256, "padding": 0.1}, "danbooru_sfw": {"size": 256}},
                 "margs": {"size": 128}}
_POSE_SHARED = dict(
    task="pose",
    detector="illustpose.models.pose:PoseEstimator",
    transform="illustpose.preprocess:pose_input",
    hparams=_POSE_HPARAMS,
    keypoint_names=ALL_KEYPOINTS,
)
_FEAT_MATCH = dict(
    _POSE_SHARED,
    architecture="feat_match",
    key_prefix="keypoint_head.matcher_rcnn.",
    builder="illustpose.models.feat_match:build",
    reference="_train/character_pose_estim/models/fermat.py",
    unused_prefixes=("rcnn.",),
)
_FEAT_CONCAT = dict(
    _POSE_SHARED,
    architecture="feat_concat",
    key_prefix="keypoint_head.",
    builder="illustpose.models.feat_concat:build",
    reference="_train/character_pose_estim/models/passup.py",
    file_options=(FileOption(
        "rcnn_weights", "PKL",
        "Detectron2 model-zoo keypoint_rcnn_R_101_FPN_3x .pkl, for a feat_concat head without R-CNN tensors"),),
)


def _pose_file(name: str, notes: str, size_basis: str = "assumed") -> tuple[KnownFile, ...]:
    return (KnownFile(f"{_RUNS}{name}.ckpt", name, "lightning", "drive_zip", 351_000_000, notes,
                      size_basis=size_basis),)


#: The released weights entries, in order: the first of a task is its default; within a task,
#: the architectures in this order (the CLI's ``--pose-model`` choices).  :func:`register`
#: adds more; the lookup functions below see both.
WEIGHTS: tuple[ModelWeights, ...] = (
    ModelWeights(
        name="segmenter", task="segment", architecture="segmenter", key_prefix="deeplab.",
        builder="illustpose.models.segmenter:build", detector="illustpose.models.segmenter:CharacterSegmenter",
        transform="illustpose.preprocess:segmenter_input", hparams={"largs": {"bg_seg": {"size": 256}}},
        categories=("background", "character"), reference="_train/character_bg_seg/models/alaska.py",
        description="character segmenter: DeepLabv3-ResNet101 + final head, mask and bbox",
        files=(
            KnownFile("segmenter.pth", "segmenter", "hf_pth", "hf", 233_000_000,
                      "Community repackaging {'model', 'final_head'}. Size public (about 233 MB).",
                      size_basis="public"),
            KnownFile(_SEGMENTER_CKPT, "segmenter", "lightning", "drive_zip", 700_000_000,
                      "Authors' Lightning checkpoint. Size assumed: about 3x the 233 MB state dict because it "
                      "keeps the Adam state."),
            KnownFile("character_bg_seg.safetensors", "segmenter", "safetensors", "animepose", 233_000_000,
                      "ComfyUI-AnimePose's repackaging: the authors' segmenter state dict (Lightning key names, "
                      "float32 and int64) as safetensors, without metadata illustpose reads. Size public (about "
                      "233 MB).", size_basis="public"),
        ),
    ),
    ModelWeights(
        name="tagger", task="tag", architecture="tagger", key_prefix="resnet.fc.",
        builder="illustpose.models.tagger:build", detector="illustpose.models.tagger:DanbooruTagger",
        transform="illustpose.preprocess:tagger_input", hparams={"largs": {"danbooru_sfw": {"size": 256}}},
        reference="_train/danbooru_tagger/models/kate.py",
        description="Danbooru tagger: ResNet-50, 1062 tags (names from the tag-name file)",
        file_options=(FileOption("tags", "PATH",
                                 "tag names (rules JSON or one name per line) when the tagger file has none"),),
        files=(
            KnownFile("tagger.pth", "tagger", "hf_pth", "hf", 103_000_000,
                      "Flat ResNet-50 state dict (format assumed). Size computed from its 25,737,243 float32 "
                      "elements (about 103 MB). Needs tags.txt beside it.", companions=("tags.txt",),
                      size_basis="computed"),
            KnownFile(_TAGGER_CKPT, "tagger", "lightning", "drive_zip", 300_000_000,
                      "Authors' Lightning checkpoint. Size assumed: about 3x its 103 MB state dict (Adam state). "
                      "Needs the rules JSON for tag names.", companions=(_RULES,)),
        ),
    ),
    ModelWeights(name="feat_match", **_FEAT_MATCH, preferred=False,
                 description="pose estimator, feature matching",
                 files=_pose_file("feat_match", "Pose, feature matching (fermat). Size public: about 351 MB "
                                  "of tensors.", "public")),
    ModelWeights(name="feat_match+data", **_FEAT_MATCH,
                 description="pose estimator, feature matching, trained with extra data (the default)",
                 files=_pose_file("feat_match+data", "Pose, feature matching trained with extra data. Size "
                                  "assumed equal to feat_match (same layout).")),
    ModelWeights(name="feat_concat", **_FEAT_CONCAT, preferred=False,
                 description="pose estimator, feature concatenation with a Keypoint R-CNN (slower)",
                 files=_pose_file("feat_concat", "Pose, feature concatenation (passup, needs the R-CNN branch). "
                                  "Size assumed about 351 MB (R-CNN tensors dominate).")),
    ModelWeights(name="feat_concat+data", **_FEAT_CONCAT,
                 description="pose estimator, feature concatenation with a Keypoint R-CNN, trained with extra "
                             "data (slower)",
                 files=_pose_file("feat_concat+data", "Pose, feature concatenation trained with extra data. "
                                  "Size assumed about 351 MB.") + (
                     KnownFile("anime_pose_head.safetensors", "feat_concat+data", "safetensors", "animepose",
                               37_500_000, "ComfyUI-AnimePose's repackaging of feat_concat+data.ckpt: its resnet.* "
                               "and keypoint_head.* tensors (Lightning key names, float32 and int64), the Keypoint "
                               "R-CNN (rcnn.*) stripped. Size public (about 37.5 MB).", size_basis="public",
                               requires="--rcnn-weights: Detectron2's keypoint_rcnn_R_101_FPN_3x, " + RCNN_ZOO_URL),)),
)


#: Side of the pose crop in pixels and its padding fraction, the released pose checkpoints'
#: ``largs.danbooru_coco.size`` / ``.padding``: the frame of pose descriptors.
POSE_CROP_SIZE: int = _POSE_HPARAMS["largs"]["danbooru_coco"]["size"]
POSE_CROP_PADDING: float = _POSE_HPARAMS["largs"]["danbooru_coco"]["padding"]

_ARCH_FIELDS = ("task", "key_prefix", "builder", "detector", "transform", "hparams", "categories",
                "keypoint_names", "reference", "file_options", "unused_prefixes")


def _check(records: Iterable[ModelWeights]) -> None:
    """Refuse a registry with repeated names, an unknown task, disagreeing records of one
    architecture, a key prefix that is not unique, or a dangling companion."""
    records = list(records)
    names = [w.name for w in records]
    if len(set(names)) != len(names):
        raise ValueError(f"weights registered twice: {sorted({n for n in names if names.count(n) > 1})}")
    by_arch: dict[str, ModelWeights] = {}
    for w in records:
        if w.task not in {t.name for t in TASKS}:
            raise ValueError(f"{w.name}: unknown task {w.task!r}")
        first = by_arch.setdefault(w.architecture, w)
        diff = [f for f in _ARCH_FIELDS if getattr(first, f) != getattr(w, f)]
        if diff:
            raise ValueError(f"{w.name} and {first.name} share architecture {w.architecture!r} but differ in {diff}")
        if any(f.kind != w.name for f in w.files):
            raise ValueError(f"{w.name}: a file of another kind is listed")
        if any(f.size_basis not in SIZE_BASES for f in w.files):
            raise ValueError(f"{w.name}: a file's size_basis is not one of {SIZE_BASES}")
    prefixes = [w.key_prefix for w in by_arch.values()]
    if len(set(prefixes)) != len(prefixes):
        raise ValueError(f"two architectures share a key prefix: {prefixes}")
    files = [f.name for w in records for f in w.files] + [f.name for f in TAG_FILES]
    if len(set(files)) != len(files):
        raise ValueError("a file is listed twice")
    for w in records:
        for f in w.files:
            if set(f.companions) - set(files):
                raise ValueError(f"{f.name}: unknown companions {set(f.companions) - set(files)}")


_check(WEIGHTS)
_RECORDS: list[ModelWeights] = list(WEIGHTS)  # the release, then what register() adds


def register(weights: ModelWeights) -> ModelWeights:
    """Add a weights record (a model of your own, or new weights of a known architecture).

    Everything derived from the registry sees it from then on: checkpoint recognition, the
    CLI's flags and ``--pose-model`` choices, ``weights list``, the ComfyUI loaders' choices.

    Raises:
        ValueError: the name is taken, its task is unknown, its key prefix is another
            architecture's, or it disagrees with the registered records of its architecture.
    """
    _check([*_RECORDS, weights])
    _RECORDS.append(weights)
    return weights


def weights_kinds() -> tuple[str, ...]:
    """Every name :func:`known_files` and :func:`illustpose.weights.resolve` accept: the records'
    names, then ``"tags"`` (the tagger's tag-name files)."""
    return tuple(w.name for w in _RECORDS) + ("tags",)


def get_weights(name: str) -> ModelWeights:
    """The record named ``name`` (``"feat_match+data"``).

    Raises:
        ValueError: an unknown name; the message lists the known ones.
    """
    for w in _RECORDS:
        if w.name == name:
            return w
    raise ValueError(f"unknown weights {name!r}; expected one of: {', '.join(w.name for w in _RECORDS)}")


def list_weights(task: str | None = None) -> tuple[ModelWeights, ...]:
    """The records of ``task`` (all when None), in registry order."""
    return tuple(w for w in _RECORDS if task is None or w.task == task)


def architectures(task: str | None = None) -> tuple[str, ...]:
    """The architectures of ``task`` (all when None), in registry order, each once."""
    return tuple(dict.fromkeys(w.architecture for w in list_weights(task)))


def architecture_weights(architecture: str) -> ModelWeights:
    """The preferred record of an architecture: its facts, and the weights used by default.

    Raises:
        ValueError: an unknown architecture (the message lists them).
    """
    for w in _RECORDS:
        if w.architecture == architecture and w.preferred:
            return w
    raise ValueError(f"unknown architecture {architecture!r}; expected one of: {', '.join(architectures())}")


def default_weights(task: str) -> ModelWeights:
    """The weights a task uses when nothing is named: the preferred record of its first architecture."""
    return architecture_weights(architectures(get_task(task).name)[0])


def detect_architecture(keys: Iterable[str]) -> str | None:
    """Which architecture a state dict with these (Lightning) key names holds; None if none.

    An architecture matches when some key starts with its :attr:`ModelWeights.key_prefix`
    (``deeplab.``: segmenter, ``resnet.fc.``: tagger, ``keypoint_head.``: feat_concat,
    ``keypoint_head.matcher_rcnn.``: feat_match).  Of matching architectures whose prefixes
    extend one another the longest wins (a feat_match file also has ``keypoint_head.*`` keys);
    keys of two unrelated architectures give None (:func:`matching_architectures` names them).
    """
    found = matching_architectures(keys)
    return found[0] if len(found) == 1 else None


def matching_architectures(keys: Iterable[str]) -> tuple[str, ...]:
    """Every architecture whose key prefix the keys have, after the longest-prefix rule of
    :func:`detect_architecture`; more than one means a mixed or merged file."""
    keys = list(keys)
    prefixes = {a: architecture_weights(a).key_prefix for a in architectures()}
    found = [a for a, p in prefixes.items() if any(k.startswith(p) for k in keys)]
    return tuple(a for a in found if not any(b != a and prefixes[b].startswith(prefixes[a]) for b in found))


def file_options(task: str | None = None) -> tuple[FileOption, ...]:
    """The further files the loaders of ``task`` (all tasks when None) take, each keyword once."""
    return tuple({o.keyword: o for w in list_weights(task) for o in w.file_options}.values())


def known_files(kind: str | None = None) -> tuple[KnownFile, ...]:
    """The known files of ``kind`` (a weights name or ``"tags"``; all when None), in download
    preference order.

    Raises:
        ValueError: an unknown kind (the message lists them).
    """
    if kind is not None and kind not in weights_kinds():
        raise ValueError(f"unknown model {kind!r}; expected one of: {', '.join(weights_kinds())}")
    every = [f for w in _RECORDS for f in w.files] + list(TAG_FILES)
    return tuple(f for f in every if kind is None or f.kind == kind)
