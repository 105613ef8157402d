"""From a :class:`~illustpose.checkpoints.Checkpoint` to a ready network: which model it is,
which hyper-parameters apply, and a strict, explained state-dict load."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .checkpoints import Checkpoint
from .errors import CheckpointError, WrongModelError

__all__ = [
    "MODEL_KINDS",
    "RELEASED_HPARAMS",
    "detect_kind",
    "expect_kind",
    "hparam",
    "load_strict",
    "read_tag_names",
]

#: Model kinds a checkpoint can hold.
MODEL_KINDS = ("segmenter", "tagger", "feat_match", "feat_concat")

#: Hyper-parameters of the released checkpoints (``shared/reference/checkpoint-formats.md`` §4,
#: reported from the real files).  Used only when a file carries none (the HF ``.pth``
#: repackaging); a Lightning or illustpose file's own values always win.
RELEASED_HPARAMS: dict[str, dict[str, Any]] = {
    "segmenter": {"largs": {"bg_seg": {"size": 256}}},
    "tagger": {"largs": {"danbooru_sfw": {"size": 256}}},
    "feat_match": {"largs": {"danbooru_coco": {"size": 256, "padding": 0.1}, "danbooru_sfw": {"size": 256}},
                   "margs": {"size": 128}},
    "feat_concat": {"largs": {"danbooru_coco": {"size": 256, "padding": 0.1}, "danbooru_sfw": {"size": 256}},
                    "margs": {"size": 128}},
}

_DESCRIPTIONS = {
    "segmenter": "a character segmenter (reference alaska.py)",
    "tagger": "a Danbooru tagger (reference kate.py)",
    "feat_match": "a feat_match pose estimator (reference fermat.py)",
    "feat_concat": "a feat_concat pose estimator (reference passup.py)",
}


def detect_kind(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Which model a Lightning-keyed state dict holds, from its key names; None if unknown.

    segmenter: ``deeplab.*``; feat_match: ``keypoint_head.matcher_rcnn.*``; feat_concat:
    ``keypoint_head.*`` without the matcher; tagger: ``resnet.fc.weight``.
    """
    if any(k.startswith("deeplab.") for k in state_dict):
        return "segmenter"
    if any(k.startswith("keypoint_head.") for k in state_dict):
        return "feat_match" if any(k.startswith("keypoint_head.matcher_rcnn.") for k in state_dict) else "feat_concat"
    if "resnet.fc.weight" in state_dict:
        return "tagger"
    return None


def expect_kind(ckpt: Checkpoint, wanted: tuple[str, ...]) -> str:
    """Return the checkpoint's kind if it is one of ``wanted``.

    Raises:
        WrongModelError: the file holds another model (the message names both), or nothing
            recognisable.
    """
    kind = detect_kind(ckpt.state_dict)
    declared = ckpt.metadata.get("model")
    if declared and kind and declared != kind:
        raise CheckpointError(f"{ckpt.path}: metadata says model '{declared}' but the tensors are {_DESCRIPTIONS[kind]}")
    if kind in wanted:
        return kind
    asked = " or ".join(_DESCRIPTIONS[w] for w in wanted)
    if kind is None:
        raise WrongModelError(f"{ckpt.path}: no known model's keys found; expected {asked}")
    raise WrongModelError(f"{ckpt.path} holds {_DESCRIPTIONS[kind]}, but {asked} was asked for; pass the right file")


def hparam(ckpt: Checkpoint, kind: str, dotted: str):
    """A hyper-parameter such as ``"largs.bg_seg.size"``: from the file, else the released value.

    Raises:
        CheckpointError: neither the file nor :data:`RELEASED_HPARAMS` has it.
    """
    for source in (ckpt.hparams, RELEASED_HPARAMS[kind]):
        node: Any = source
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is not None:
            return node
    raise CheckpointError(f"{ckpt.path}: hyper-parameter '{dotted}' missing and no released default is known")


@contextlib.contextmanager
def _skip_init():
    """Make ``torch.nn.init`` fills no-ops while a module is built (every value is replaced by
    the checkpoint's, so filling would only cost time)."""
    names = ("normal_", "uniform_", "constant_", "ones_", "zeros_", "kaiming_normal_", "kaiming_uniform_",
             "xavier_normal_", "xavier_uniform_", "trunc_normal_")
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for n in names:
            setattr(nn.init, n, lambda tensor, *a, **k: tensor)
        yield
    finally:
        for n, f in saved.items():
            setattr(nn.init, n, f)


def load_strict(build: Callable[[], nn.Module], state_dict: Mapping[str, torch.Tensor], source: str,
                ignore_prefixes: tuple[str, ...] = ()) -> nn.Module:
    """Build a module and fill it with exactly its keys and shapes from ``state_dict``.

    ``build()`` runs without the random initialisation (its parameters are allocated, never
    written, then dropped) and the checkpoint's tensors are put in their place (zero-copy when
    they are memory-mapped), so loading costs little more than reading the file.  Keys
    starting with ``ignore_prefixes`` (e.g. feat_match's unused ``rcnn.``) are dropped first.

    Returns:
        the module, on the CPU, its parameters the checkpoint's tensors.

    Raises:
        CheckpointError: listing missing keys, unexpected keys and shape mismatches by name.
    """
    with _skip_init():
        module = build()
    sd = {k: v for k, v in state_dict.items() if not k.startswith(ignore_prefixes)}
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def show(items):
            return ", ".join(items[:6]) + (f", ... ({len(items)} in all)" if len(items) > 6 else "")
        parts = [f"missing {show(missing)}" if missing else "",
                 f"unexpected {show(unexpected)}" if unexpected else "",
                 f"wrong shapes {show(shapes)}" if shapes else ""]
        raise CheckpointError(f"{source}: weights do not fit the model: " + "; ".join(p for p in parts if p))
    _assign(module, {k: v.to(own[k].dtype) for k, v in sd.items()})
    return module


def _assign(module: nn.Module, sd: Mapping[str, torch.Tensor]) -> None:
    """Put the checkpoint's tensors in place of the module's own (keys and shapes already
    checked): what ``load_state_dict(assign=True)`` does for these plain modules (none has
    load hooks), without its per-module dispatch, which costs more than the rest of a
    safetensors load.  Parameters are frozen (``requires_grad=False``): inference only."""
    for name, mod in module.named_modules():
        prefix = f"{name}." if name else ""
        for key, param in mod._parameters.items():
            if param is not None:
                mod._parameters[key] = nn.Parameter(sd[prefix + key], requires_grad=False)
        for key, buf in mod._buffers.items():
            if buf is not None and key not in mod._non_persistent_buffers_set:
                mod._buffers[key] = sd[prefix + key]


def read_tag_names(path: str | Path) -> list[str]:
    """Tag names in output order from a rules JSON (list of objects with ``name``, the
    reference's ``*_rules.json``), a JSON list of strings, or a text file with one name per
    line (blank lines ignored).

    Raises:
        CheckpointError: unreadable file or wrong structure.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{p}: cannot read tag names ({e})") from None
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
            return [r["name"] if isinstance(r, Mapping) else str(r) for r in data]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise CheckpointError(f"{p}: expected a JSON list of rules with a 'name' field, or of strings") from None
    return [line.strip() for line in text.splitlines() if line.strip()]
