"""Safe readers and writers for every released weight format.

Formats (facts: ``shared/reference/checkpoint-formats.md``):

* **Lightning** ``.ckpt`` (the authors' files): a ``torch.save`` zip whose pickle holds
  ``state_dict`` (Lightning key names such as ``resnet.conv1.weight``), ``hyper_parameters``
  (``{'bargs', 'pargs', 'largs', 'margs'}`` as ``easydict.EasyDict``), a
  ``pytorch_lightning ... ModelCheckpoint`` class used as a dict key, optimizer state, ...
* **HF community** ``.pth`` (``public-data/bizarre-pose-estimator-models``): ``tagger.pth`` is a
  flat ResNet-50 state dict; ``segmenter.pth`` is ``{'model': ..., 'final_head': ...}``.
* **illustpose** ``.safetensors``: Lightning key names, plus string metadata
  ``illustpose_format``, ``model``, ``hparams`` (JSON), ``tags`` (JSON list, tagger only),
  ``source``, ``source_sha256``.

Pickles are untrusted input.  :func:`read_torch_zip` never calls :mod:`pickle`'s default
class lookup: an allow-list maps the few globals these files use to inert local stand-ins
(tensor rebuild, storage dtype markers, ``OrderedDict``, a plain-dict ``EasyDict``, a
placeholder ``ModelCheckpoint``).  Any other global raises
:class:`~illustpose.errors.UnsafeCheckpointError` naming it, before anything runs.
Neither pytorch_lightning nor easydict is needed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tempfile
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import CheckpointError, UnsafeCheckpointError

__all__ = [
    "Checkpoint",
    "read_torch_zip",
    "read_checkpoint",
    "save_safetensors",
    "file_sha256",
    "atomic_write",
    "SAFETENSORS_FORMAT",
]

SAFETENSORS_FORMAT = "illustpose-v1"

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _StorageType:
    """Inert marker standing for ``torch.<X>Storage`` inside a pickle."""

    def __init__(self, name: str):
        self.dtype = _STORAGE_DTYPES[name]


class _AttrDict(dict):
    """Stand-in for ``easydict.EasyDict``: a dict whose keys also read as attributes.

    EasyDict is pickled as ``NEWOBJ(EasyDict)``, ``SETITEMS(entries)``, ``BUILD(same entries)``;
    ``__setstate__`` accepts that BUILD state without executing anything.
    """

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setstate__(self, state):
        if isinstance(state, tuple):  # (dict_state, slot_state) form
            state = state[0] or {}
        if isinstance(state, dict):
            self.update(state)


class _Placeholder:
    """Stand-in for classes only referenced (never instantiated) by a checkpoint."""

    def __init__(self, qualname: str):
        self.qualname = qualname

    def __repr__(self) -> str:
        return f"<placeholder {self.qualname}>"

    def __hash__(self) -> int:
        return hash(self.qualname)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Placeholder) and other.qualname == self.qualname


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, *extra):
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _rebuild_parameter(data, requires_grad=False, hooks=None, *extra):
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("easydict", "EasyDict"): _AttrDict,
    ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"):
        _Placeholder("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
    ("torch", "device"): str,
}
_ALLOWED.update({("torch", name): _StorageType(name) for name in _STORAGE_DTYPES})


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, fp, zf: zipfile.ZipFile, prefix: str, source: str):
        super().__init__(fp)
        self._zf = zf
        self._prefix = prefix
        self._source = source
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self._source}: refused to load: the pickle asks for the global "
                f"'{module}.{name}', which is not on the allow-list of a weight file. "
                "Nothing was executed. Only use weight files from a source you trust, "
                "or convert it where it was made with `python -m illustpose weights convert`."
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self._source}: unknown persistent id {pid!r} in the pickle")
        _, stype, key, _location, numel = pid[:5]
        if not isinstance(stype, _StorageType):
            raise CheckpointError(f"{self._source}: storage of unknown type {stype!r}")
        key = str(key)
        if key not in self._storages:
            try:
                raw = self._zf.read(f"{self._prefix}/data/{key}")
            except KeyError:
                raise CheckpointError(
                    f"{self._source}: the archive lacks the tensor data 'data/{key}': the "
                    "file is truncated or damaged; download it again."
                ) from None
            flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
            t = flat.view(stype.dtype) if flat.numel() else torch.empty(0, dtype=stype.dtype)
            if t.numel() < numel:
                raise CheckpointError(f"{self._source}: tensor data 'data/{key}' is short")
            self._storages[key] = t
        return self._storages[key]


def read_torch_zip(path: str | os.PathLike) -> Any:
    """Unpickle a ``torch.save`` zip archive with an allow-list; never executes file code.

    Args:
        path: a ``.ckpt``/``.pth``/``.pt`` file written by ``torch.save`` (torch >= 1.6 zip).

    Returns:
        The pickled object with tensors as CPU ``torch.Tensor`` (whatever device they were
        saved from), EasyDicts as attribute-dicts and referenced classes as placeholders.

    Raises:
        UnsafeCheckpointError: the pickle references any other global.
        CheckpointError: not a zip archive (e.g. a legacy pre-1.6 file), truncated or damaged.
    """
    source = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(
            f"{source}: not a readable torch zip checkpoint ({e}). The file is truncated, "
            "damaged or of another format; download it again."
        ) from None
    with zf:
        pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise CheckpointError(f"{source}: expected exactly one '<prefix>/data.pkl' entry, found {len(pkls)}")
        prefix = pkls[0].split("/")[0]
        try:
            data = zf.read(pkls[0])
            return _RestrictedUnpickler(io.BytesIO(data), zf, prefix, source).load()
        except (UnsafeCheckpointError, CheckpointError):
            raise
        except Exception as e:  # damaged pickle stream, bad zip member CRC, ...
            raise CheckpointError(f"{source}: damaged checkpoint: {type(e).__name__}: {e}") from None


@dataclass
class Checkpoint:
    """Weights and metadata read from any supported file.

    Attributes:
        state_dict: ``{lightning_key: CPU tensor}`` with the authors' Lightning key names
            (``resnet.*``, ``deeplab.*``, ``final_head.*``, ``keypoint_head.*``, ``rcnn.*``).
        hparams: nested plain dicts of the checkpoint's hyper-parameters
            (``{'largs': {...}, 'margs': {...}}``), empty when the format carries none.
        format: ``"lightning"``, ``"hf_pth"`` or ``"safetensors"``.
        metadata: other strings (tag names as JSON, source file, source sha256, model kind).
        path: the file it came from.
    """

    state_dict: dict[str, torch.Tensor]
    hparams: dict
    format: str
    path: str
    metadata: dict[str, str] = field(default_factory=dict)


def _plain(obj):
    """EasyDicts and OrderedDicts -> plain dicts; tensors -> Python numbers; recursive."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read any supported weight file into Lightning key names.

    HF layouts are renamed: a flat ResNet state dict (``conv1.weight`` ...) becomes
    ``resnet.*``; ``{'model', 'final_head'}`` becomes ``deeplab.*`` + ``final_head.*``.  Which
    model it is, and whether it is complete, is checked by the model loaders
    (:mod:`illustpose.models`), which give the right error for the model asked for.

    Raises:
        CheckpointError / UnsafeCheckpointError: see :func:`read_torch_zip`; also an unknown
            layout or a missing file.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such weight file")
    if p.suffix in (".safetensors", ".sft"):
        return _read_safetensors(p)
    with open(p, "rb") as f:
        magic = f.read(8)
    if magic[:2] != b"PK":
        if magic[:1] == b"\x80":
            raise CheckpointError(
                f"{p}: a legacy (pre-zip) torch pickle or a plain pickle; only torch zip "
                "checkpoints (torch >= 1.6), .pth/.ckpt, and .safetensors are read."
            )
        raise CheckpointError(f"{p}: not a checkpoint (unknown file signature {magic[:4]!r})")
    obj = read_torch_zip(p)
    if isinstance(obj, Mapping) and "state_dict" in obj and _is_tensor_dict(obj["state_dict"]):
        hp = obj.get("hyper_parameters") or {}
        return Checkpoint(dict(obj["state_dict"]), _plain(hp), "lightning", str(p))
    if isinstance(obj, Mapping) and set(obj) == {"model", "final_head"}:
        sd = {f"deeplab.{k}": v for k, v in obj["model"].items()}
        sd.update({f"final_head.{k}": v for k, v in obj["final_head"].items()})
        return Checkpoint(sd, {}, "hf_pth", str(p))
    if _is_tensor_dict(obj):
        keys = list(obj)
        if any(k.startswith(("resnet.", "deeplab.", "keypoint_head.", "final_head.")) for k in keys):
            return Checkpoint(dict(obj), {}, "hf_pth", str(p))
        return Checkpoint({f"resnet.{k}": v for k, v in obj.items()}, {}, "hf_pth", str(p))
    raise CheckpointError(
        f"{p}: unrecognised checkpoint layout (top-level {type(obj).__name__}"
        + (f" with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else "")
        + "); expected a Lightning .ckpt, an HF .pth, or an illustpose .safetensors."
    )


def _read_safetensors(p: Path) -> Checkpoint:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{p}: unreadable safetensors file ({e}); it is truncated or damaged: "
            "convert or download it again."
        ) from None
    try:
        hp = json.loads(meta.pop("hparams", "{}"))
    except json.JSONDecodeError:
        raise CheckpointError(f"{p}: metadata 'hparams' is not valid JSON") from None
    return Checkpoint(sd, hp, "safetensors", str(p), meta)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    Readers see either the old file or the complete new one, never a partial write.  The
    temporary file is removed if ``write`` raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_safetensors(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    *,
    model: str,
    hparams: Mapping,
    extra: Mapping[str, str] | None = None,
) -> None:
    """Write weights in illustpose's safetensors format, atomically.

    Args:
        path: destination ``.safetensors``.
        state_dict: Lightning key names -> tensors (made contiguous, copied to CPU).
        model: model kind (``"tagger"``, ``"segmenter"``, ``"feat_match"``, ``"feat_concat"``).
        hparams: JSON-serialisable hyper-parameters (stored as the ``hparams`` metadata).
        extra: more string metadata (``tags`` JSON, ``source``, ``source_sha256``).
    """
    from safetensors.torch import save_file

    meta = {"illustpose_format": SAFETENSORS_FORMAT, "model": model, "hparams": json.dumps(hparams)}
    meta.update(extra or {})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
