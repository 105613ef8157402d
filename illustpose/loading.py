"""From a :class:`~illustpose.checkpoints.Checkpoint` to a ready network: which model it is
(:func:`expect_architecture`), which hyper-parameters apply (:func:`hparam`), and a strict,
explained state-dict load (:func:`load_strict`, :func:`check_keys`).  Every model's facts come
from :mod:`illustpose.registry`."""

from __future__ import annotations

import contextlib
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from .checkpoints import Checkpoint
from .errors import CheckpointError, WrongModelError
from .registry import (ModelWeights, architecture_weights, architectures, detect_architecture, dotted_get, get_task,
                       matching_architectures)

__all__ = ["expect_architecture", "hparam", "check_keys", "load_strict"]


def _described(architecture: str) -> str:
    """``a feat_match pose estimator (reference fermat.py)``, ``a Danbooru tagger (reference kate.py)``."""
    w = architecture_weights(architecture)
    noun = get_task(w.task).noun
    name = f"{w.architecture} {noun}" if len(architectures(w.task)) > 1 else noun
    return f"a {name} (reference {w.reference.rsplit('/', 1)[-1]})"


def expect_architecture(ckpt: Checkpoint, task: str | None = None) -> ModelWeights:
    """The registry record of the checkpoint's architecture, if it is one of ``task``'s (any
    registered architecture when ``task`` is None).

    Returns:
        the architecture's preferred :class:`~illustpose.registry.ModelWeights` (its facts:
        builder, hyper-parameters, names).

    Raises:
        CheckpointError: the file's metadata names another architecture than its tensors.
        WrongModelError: the file holds another task's model (the message names both), or
            nothing recognisable.
    """
    arch = detect_architecture(ckpt.state_dict)
    declared = ckpt.metadata.get("model")
    if declared and arch and declared != arch:
        raise CheckpointError(f"{ckpt.path}: metadata says model '{declared}' but the tensors are {_described(arch)}")
    wanted = architectures(task)
    if arch in wanted:
        return architecture_weights(arch)
    asked = " or ".join(_described(a) for a in wanted)
    if arch is None:
        mixed = matching_architectures(ckpt.state_dict)
        if mixed:
            raise WrongModelError(f"{ckpt.path} mixes the tensors of {' and '.join(map(_described, mixed))} "
                                  f"(a merged or corrupt file); pass the original file of {asked}")
        raise WrongModelError(f"{ckpt.path}: no known model's keys found; expected {asked}")
    raise WrongModelError(f"{ckpt.path} holds {_described(arch)}, but {asked} was asked for; pass the right file")


def hparam(ckpt: Checkpoint, weights: ModelWeights, dotted: str):
    """A hyper-parameter such as ``"largs.bg_seg.size"``: from the file, else the released value.

    Raises:
        CheckpointError: neither the file nor the registry record has it.
    """
    node = dotted_get(ckpt.hparams, dotted)
    if node is None:
        node = weights.hparam(dotted)
    if node is None:
        raise CheckpointError(f"{ckpt.path}: hyper-parameter '{dotted}' missing and no released default is known")
    return node


def check_keys(expected: Mapping[str, Sequence[int]], state_dict: Mapping[str, torch.Tensor], source: str,
               what: str) -> None:
    """Refuse a state dict whose names or shapes differ from ``expected`` in any way.

    Args:
        expected: ``{key: shape}`` the model needs.
        state_dict: ``{key: tensor}`` from the file.
        source: the file, for the message.
        what: what is wrong when they differ (``"weights do not fit the model"``).

    Raises:
        CheckpointError: ``"<source>: <what>: missing a, b; unexpected c; wrong shapes
            d: file (..) vs model (..)"``, at most six names per list.
    """
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k])}"
              for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k])]
    if missing or unexpected or shapes:
        parts = [f"{label} {', '.join(items[:6])}" + (f", ... ({len(items)} in all)" if len(items) > 6 else "")
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shapes", shapes))
                 if items]
        raise CheckpointError(f"{source}: {what}: " + "; ".join(parts))


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
    check_keys({k: v.shape for k, v in own.items()}, sd, source, "weights do not fit the model")
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
