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
  ``source``, ``source_sha256``.  Other safetensors files with Lightning key names (ComfyUI-
  AnimePose's ``character_bg_seg.safetensors`` and the head-only ``anime_pose_head.safetensors``)
  are read for their tensors; their metadata is not illustpose's and is ignored.
* **Detectron2 model zoo** ``.pkl`` (feat_concat's R-CNN, for head-only files): a pickled dict of
  numpy arrays (:func:`read_model_zoo_pkl`).

Pickles are untrusted input.  Both pickle readers are a :class:`RestrictedUnpickler`, which never
uses :mod:`pickle`'s default class lookup: an allow-list (data, one per file type) maps the few
globals the files use to inert stand-ins (for torch zips: tensor rebuild, storage dtype markers,
``OrderedDict``, a plain-dict ``EasyDict``, a placeholder ``ModelCheckpoint``; for the model
zoo: numpy's array reconstruction).  Any other global raises
:class:`~illustpose.errors.UnsafeCheckpointError` naming it, before anything runs.  Neither
pytorch_lightning, easydict nor Detectron2 is needed.
"""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import stat
import types
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .errors import CheckpointError, UnsafeCheckpointError
from .fileio import atomic_path

__all__ = [
    "Checkpoint",
    "RestrictedUnpickler",
    "read_torch_zip",
    "read_checkpoint",
    "read_model_zoo_pkl",
    "save_safetensors",
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


#: The globals of the authors' Lightning files and the HF ``.pth`` files, with inert stand-ins.
_TORCH_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("easydict", "EasyDict"): _AttrDict,
    ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"):
        _Placeholder("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
    ("torch", "device"): str,
}
_TORCH_ALLOWED.update({("torch", name): _StorageType(name) for name in _STORAGE_DTYPES})


_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by Python code, whose attributes can be set


class _Call:
    """A fresh callable standing for one allow-listed Python function, made per lookup: a
    pickle's BUILD step on it cannot change the shared function (its ``__defaults__`` ...)."""

    __slots__ = ("_func",)

    def __init__(self, func):
        object.__setattr__(self, "_func", func)

    def __call__(self, *args, **kwargs):
        return self._func(*args, **kwargs)

    def __setattr__(self, name, value):
        raise UnsafeCheckpointError(f"refused: the pickle sets the attribute {name!r} of an allow-listed function")

    def __repr__(self) -> str:
        return f"<allowed {getattr(self._func, '__qualname__', self._func)!r}>"


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of an allow-list; nothing else is imported.

    Subclasses set :attr:`allowed` (``{(module, name): object to use instead}``, data only) and
    :attr:`refusal_hint` (what to tell the user).  ``find_class`` of any other global raises
    :class:`~illustpose.errors.UnsafeCheckpointError` naming it, before anything from the file
    runs; persistent ids are refused unless a subclass handles them.

    What a pickle gets for an allowed global cannot outlive its load (a BUILD step sets
    attributes on whatever it is given): Python functions come wrapped in a fresh
    :class:`_Call` per lookup, Python classes as a subclass made for this unpickler, other
    Python objects (markers, placeholders) as a copy; C functions and C types, whose attributes
    cannot be set, as they are.  An ``UnsafeCheckpointError`` starting ``"refused:"`` (raised
    by a stand-in) gets the file name added.

    Args:
        fp: the binary pickle stream.
        source: the file's name, for messages.
        **kwargs: passed to :class:`pickle.Unpickler` (e.g. ``encoding="latin1"``).
    """

    allowed: Mapping[tuple[str, str], Any] = {}
    refusal_hint: str = "Only use weight files from a source you trust."

    def __init__(self, fp, source: str, **kwargs):
        super().__init__(fp, **kwargs)
        self.source = source
        self._classes: dict[type, type] = {}

    def find_class(self, module: str, name: str):
        try:
            obj = self.allowed[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self.source}: refused to load: the pickle asks for the global '{module}.{name}', "
                f"which is not on the allow-list of this file type. Nothing was executed. {self.refusal_hint}"
            ) from None
        if isinstance(obj, types.FunctionType):
            return _Call(obj)
        if isinstance(obj, type):
            if not obj.__flags__ & _HEAPTYPE:
                return obj
            if obj not in self._classes:
                self._classes[obj] = type(obj.__name__, (obj,), {"__module__": obj.__module__})
            return self._classes[obj]
        if isinstance(obj, types.BuiltinFunctionType):
            return obj
        return copy.copy(obj)

    def load(self):
        """Unpickle the stream (:meth:`pickle.Unpickler.load`), naming the file in a stand-in's refusal."""
        try:
            return super().load()
        except UnsafeCheckpointError as e:
            if str(e).startswith("refused:"):
                raise UnsafeCheckpointError(f"{self.source}: {e}") from None
            raise

    def persistent_load(self, pid):
        raise CheckpointError(f"{self.source}: unexpected persistent id {pid!r} in the pickle")


class _TorchZipUnpickler(RestrictedUnpickler):
    """The pickle of a ``torch.save`` zip: :data:`_TORCH_ALLOWED`, storages read from the archive."""

    allowed = _TORCH_ALLOWED
    refusal_hint = ("Only use weight files from a source you trust, or convert it where it was made with "
                    "`python -m illustpose weights convert`.")

    def __init__(self, fp, zf: zipfile.ZipFile, prefix: str, source: str):
        super().__init__(fp, source)
        self._zf = zf
        self._prefix = prefix
        self._storages: dict[str, torch.Tensor] = {}

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.source}: unknown persistent id {pid!r} in the pickle")
        _, stype, key, _location, numel = pid[:5]
        if not isinstance(stype, _StorageType):
            raise CheckpointError(f"{self.source}: storage of unknown type {stype!r}")
        key = str(key)
        if key not in self._storages:
            try:
                raw = self._zf.read(f"{self._prefix}/data/{key}")
            except KeyError:
                raise CheckpointError(
                    f"{self.source}: the archive lacks the tensor data 'data/{key}': the "
                    "file is truncated or damaged; download it again."
                ) from None
            flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
            t = flat.view(stype.dtype) if flat.numel() else torch.empty(0, dtype=stype.dtype)
            if t.numel() < numel:
                raise CheckpointError(f"{self.source}: tensor data 'data/{key}' is short")
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
            return _TorchZipUnpickler(io.BytesIO(data), zf, prefix, source).load()
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
    """An illustpose safetensors file, or another program's with the same key names (e.g.
    ComfyUI-AnimePose's ``character_bg_seg.safetensors`` / ``anime_pose_head.safetensors``):
    a file without ``illustpose_format`` metadata is read for its tensors only, its metadata
    (free text such as ``source`` or ``license``) ignored."""
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
    if "illustpose_format" not in meta:
        return Checkpoint(sd, {}, "safetensors", str(p))
    try:
        hp = json.loads(meta.pop("hparams", "{}"))
    except json.JSONDecodeError:
        raise CheckpointError(f"{p}: metadata 'hparams' is not valid JSON") from None
    if hp is None:  # written with hparams=None: no training settings, as a file without the key
        hp = {}
    if not isinstance(hp, dict):
        raise CheckpointError(f"{p}: metadata 'hparams' is {type(hp).__name__}, not a JSON object; "
                              "convert the weights again (`python -m illustpose weights convert`)")
    return Checkpoint(sd, hp, "safetensors", str(p), meta)


# numpy's own reconstruction helpers, found through its reduce protocol (numpy 1.x names
# them numpy.core.*, numpy 2.x numpy._core.*; both spellings resolve to the installed one)
_NP_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_NP_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]
_NP_SCALAR = np.float32(0).__reduce__()[0]
_LATIN1_NAMES = frozenset({"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"})


class _NdarrayMarker:
    """Inert stand-in for ``numpy.ndarray`` in a pickle: numpy's pickles only pass it to
    ``_reconstruct`` (:func:`_np_reconstruct`); calling it (a huge or zero-stride array from a
    few bytes) is refused."""

    def __call__(self, *args, **kwargs):
        raise UnsafeCheckpointError("refused: the pickle calls numpy.ndarray(...) itself; numpy's own pickles "
                                    "never do")

    def __repr__(self) -> str:
        return "<numpy.ndarray marker>"


def _np_reconstruct(cls, shape, dtype):
    """numpy's ``_reconstruct(ndarray, shape, typecode)`` for the empty array its pickles start from.

    numpy always writes the shape ``(0,)``; the data follows in ``ndarray.__setstate__``, which
    checks its size against the bytes in the file.  Anything else (another class, a shape with
    elements: memory allocated from a few bytes) raises
    :class:`~illustpose.errors.UnsafeCheckpointError`.

    Returns:
        an empty ``numpy.ndarray``.
    """
    if not isinstance(cls, _NdarrayMarker):
        raise UnsafeCheckpointError(f"refused: numpy's _reconstruct asked to create {cls!r:.60}, not an ndarray")
    if not (isinstance(shape, tuple) and all(isinstance(n, (int, np.integer)) for n in shape) and 0 in shape):
        raise UnsafeCheckpointError(f"refused: numpy's _reconstruct with the shape {shape!r:.60}; numpy's own "
                                    "pickles give a shape with 0 elements")
    return _NP_RECONSTRUCT(np.ndarray, shape, dtype)


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles use it (str -> bytes, latin-1); other codecs
    (compared by name, no codec lookup runs) raise :class:`~illustpose.errors.UnsafeCheckpointError`."""
    if not (isinstance(encoding, str) and encoding.lower() in _LATIN1_NAMES and isinstance(text, str)):
        raise UnsafeCheckpointError(f"refused: _codecs.encode with encoding {encoding!r:.40} (only latin-1 is used "
                                    "by pickled bytes)")
    return text.encode("latin1")


def _empty_bytes(*args):
    """``bytes()``, how protocol-2 pickles spell ``b""`` (an empty array's data); ``bytes(n)``
    (memory from a few bytes) raises :class:`~illustpose.errors.UnsafeCheckpointError`."""
    if args:
        raise UnsafeCheckpointError(f"refused: bytes{args!r:.40} (pickles only call bytes() for b'')")
    return b""


#: The globals of a Detectron2 model-zoo ``.pkl`` (a dict of numpy arrays).
_ZOO_ALLOWED: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _latin1_encode,  # how protocol-2 pickles from Python 3 spell bytes
    ("builtins", "bytes"): _empty_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
    ("collections", "OrderedDict"): OrderedDict,
    ("numpy", "ndarray"): _NdarrayMarker(),
    ("numpy", "dtype"): np.dtype,
}
for _pkg in ("numpy.core", "numpy._core"):
    _ZOO_ALLOWED[(f"{_pkg}.multiarray", "_reconstruct")] = _np_reconstruct
    _ZOO_ALLOWED[(f"{_pkg}.multiarray", "scalar")] = _NP_SCALAR
    _ZOO_ALLOWED[(f"{_pkg}.numeric", "_frombuffer")] = _NP_FROMBUFFER


class _ZooUnpickler(RestrictedUnpickler):
    allowed = _ZOO_ALLOWED
    refusal_hint = ("A Detectron2 model-zoo file (a dict of numpy arrays) never needs it. Use the original "
                    "model_final_*.pkl from the Detectron2 model zoo.")


def read_model_zoo_pkl(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights of a Detectron2 model-zoo file, without executing pickled code.

    The file (e.g. ``COCO-Keypoints/keypoint_rcnn_R_101_FPN_3x/138363331/model_final_997cc7.pkl``)
    is a pickled ``{'model': {detectron2_name: numpy array}, '__author__': ..., ...}``, possibly
    a Python 2 pickle.  It is read with an allow-list unpickler (numpy array/dtype
    reconstruction, ``OrderedDict`` and ``_codecs.encode`` for latin-1 only).  Which names and shapes a
    model needs is checked by its builder (:func:`illustpose.models.feat_concat.build`).

    Returns:
        ``{detectron2_name: float32 CPU tensor}`` in file order.

    Raises:
        UnsafeCheckpointError: the pickle references any other global (nothing is executed).
        CheckpointError: unreadable, not a model-zoo dict, or non-numeric arrays.
    """
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = _ZooUnpickler(f, source, encoding="latin1").load()
    except (UnsafeCheckpointError, CheckpointError):
        raise
    except OSError as e:
        raise CheckpointError(f"{source}: cannot read ({e})") from None
    except Exception as e:  # any malformed pickle: EOFError, UnpicklingError, ValueError, ...
        raise CheckpointError(
            f"{source}: not a readable Detectron2 model-zoo pickle ({type(e).__name__}: {e})") from None
    if not (isinstance(data, Mapping) and isinstance(data.get("model"), Mapping)):
        raise CheckpointError(f"{source}: expected a Detectron2 model-zoo dict with a 'model' entry of arrays")
    weights: dict[str, torch.Tensor] = {}
    for name, arr in data["model"].items():
        if not (isinstance(arr, np.ndarray) and arr.dtype.kind in "fiub"):
            raise CheckpointError(f"{source}: '{name}' is not a numeric array ({type(arr).__name__})")
        weights[str(name)] = torch.from_numpy(np.array(arr, dtype=np.float32))
    return weights


def save_safetensors(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    *,
    model: str,
    hparams: Mapping | None,
    extra: Mapping[str, str] | None = None,
) -> None:
    """Write weights in illustpose's safetensors format, atomically.

    Args:
        path: destination ``.safetensors``.
        state_dict: Lightning key names -> tensors (made contiguous, copied to CPU).
        model: model kind (``"tagger"``, ``"segmenter"``, ``"feat_match"``, ``"feat_concat"``).
        hparams: JSON-serialisable hyper-parameters (stored as the ``hparams`` metadata; None or
            ``{}``: none, the registry's released values are used when loading).
        extra: more string metadata (``tags`` JSON, ``source``, ``source_sha256``).
    """
    from safetensors.torch import save_file

    meta = {"illustpose_format": SAFETENSORS_FORMAT, "model": model, "hparams": json.dumps(hparams)}
    meta.update(extra or {})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        mode = stat.S_IMODE(tmp.stat().st_mode)  # from the umask (atomic_path)
        save_file(tensors, str(tmp), metadata=meta)
        os.chmod(tmp, mode)  # safetensors 0.8 replaces the file with a 0600 one of its own
