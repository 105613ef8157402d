"""Writers of weight files in the exact released formats, for tests (random/golden weights only).

Layouts follow ``shared/reference/checkpoint-formats.md``: the authors' PyTorch-Lightning
``.ckpt`` (archive prefix ``archive``, pickle protocol 2, storages tagged ``cuda:0``, easydict
hyper-parameters pickled NEWOBJ + SETITEMS + BUILD, a ``ModelCheckpoint`` class as a callbacks
key, Adam optimizer state, scheduler state) and the HF community ``.pth`` files.  The two
foreign classes are stand-ins registered under their real module names only while a file is
written, so the library under test can never import them.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import types
from collections import OrderedDict
from pathlib import Path

import torch

__all__ = ["write_lightning_ckpt", "write_hf_tagger", "write_hf_segmenter", "write_rules_json", "AUTHORS_PATHS",
           "write_animepose_segmenter", "write_animepose_head"]

#: the authors' file paths inside bizarre_pose_models.zip
AUTHORS_PATHS = {
    "tagger": "_train/danbooru_tagger/runs/waning_kate_vulcan0001/checkpoints/epoch=0022-val_f2=0.4461-val_loss=0.0766.ckpt",
    "segmenter": "_train/character_bg_seg/runs/eyeless_alaska_vulcan0000/checkpoints/epoch=0096-val_f1=0.9508-val_loss=0.0483.ckpt",
    "feat_match": "_train/character_pose_estim/runs/feat_match.ckpt",
    "feat_match+data": "_train/character_pose_estim/runs/feat_match+data.ckpt",
    "rules": "_data/danbooru/_filters/intently_combatively_rules.json",
}

HPARAMS = {
    "tagger": {"bargs": {"name": "waning_kate", "dn": "."}, "pargs": {},
               "largs": {"danbooru_sfw": {"size": 256, "filter_subset": "intently", "filter_rules": "combatively"}},
               "margs": {"lr": 0.001}},
    "segmenter": {"bargs": {"name": "eyeless_alaska", "dn": "."}, "pargs": {},
                  "largs": {"bg_seg": {"size": 256}}, "margs": {"lr": 0.001}},
    "feat_match": {"bargs": {"name": "feat_match", "dn": "."}, "pargs": {},
                   "largs": {"danbooru_coco": {"size": 256, "padding": 0.1}},
                   "margs": {"size": 128, "resnet_inferserve_query": "kate", "lambda_match": 1.0, "lr": 0.001}},
}


def _fake_module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    for k, v in attrs.items():
        v.__module__ = name
        v.__qualname__ = k
        setattr(mod, k, v)
    return mod


@contextlib.contextmanager
def _foreign_classes():
    """Register stand-ins for easydict.EasyDict and Lightning's ModelCheckpoint while pickling."""

    class EasyDict(dict):
        # like easydict: every item is also an attribute, so __dict__ mirrors the items
        def __init__(self, d=None):
            super().__init__()
            for k, v in (d or {}).items():
                self[k] = v

        def __setitem__(self, k, v):
            v = EasyDict(v) if isinstance(v, dict) and not isinstance(v, EasyDict) else v
            super().__setitem__(k, v)
            object.__setattr__(self, k, v)

    class ModelCheckpoint:
        pass

    names = ["easydict", "pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    saved = {n: sys.modules.get(n) for n in names}
    sys.modules["easydict"] = _fake_module("easydict", EasyDict=EasyDict)
    sys.modules["pytorch_lightning"] = types.ModuleType("pytorch_lightning")
    sys.modules["pytorch_lightning.callbacks"] = types.ModuleType("pytorch_lightning.callbacks")
    sys.modules["pytorch_lightning.callbacks.model_checkpoint"] = _fake_module(
        "pytorch_lightning.callbacks.model_checkpoint", ModelCheckpoint=ModelCheckpoint)
    try:
        yield EasyDict, ModelCheckpoint
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


@contextlib.contextmanager
def _storages_tagged(location: str):
    """Make torch.save tag every storage with ``location`` (the authors trained on GPUs)."""
    reg = torch.serialization._package_registry
    entry = (-1000, lambda obj: location, lambda obj, loc: obj)
    reg.insert(0, entry)
    try:
        yield
    finally:
        reg.remove(entry)


def write_lightning_ckpt(path: Path, kind: str, state_dict: dict, *, trainable_prefix: str = "",
                         pl_version: str = "1.3.8") -> Path:
    """Write a Lightning checkpoint with the authors' structure around ``state_dict``."""
    params = [k for k, v in state_dict.items() if v.is_floating_point()
              and not k.endswith(("running_mean", "running_var")) and k.startswith(trainable_prefix)]
    adam_state = {i: {"step": 1000, "exp_avg": torch.zeros_like(state_dict[k]), "exp_avg_sq": torch.zeros_like(state_dict[k])}
                  for i, k in enumerate(params)}
    optimizer = {"state": adam_state, "param_groups": [{"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-08,
                                                        "weight_decay": 0, "amsgrad": False, "params": list(range(len(params)))}]}
    with _foreign_classes() as (EasyDict, ModelCheckpoint):
        hp = {k: EasyDict(v) for k, v in HPARAMS[kind if kind in HPARAMS else "feat_match"].items()}
        ckpt = {
            "epoch": 23, "global_step": 12345, "pytorch-lightning_version": pl_version,
            "state_dict": OrderedDict(state_dict),
            "callbacks": {ModelCheckpoint: {"monitor": "val_loss", "best_model_score": torch.tensor(0.07),
                                            "best_model_path": "/runs/x.ckpt", "current_score": torch.tensor(0.07),
                                            "dirpath": "/runs"}},
            "optimizer_states": [optimizer],
            "lr_schedulers": [],
            "hparams_name": "kwargs",
            "hyper_parameters": hp,
        }
        buf = io.BytesIO()  # Lightning saves to a buffer first: archive prefix 'archive'
        with _storages_tagged("cuda:0"):
            torch.save(ckpt, buf, pickle_protocol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def write_hf_tagger(path: Path, lightning_sd: dict) -> Path:
    """HF ``tagger.pth``: the tagger's ``resnet.*`` without the prefix, CPU storages."""
    torch.save(OrderedDict((k[len("resnet."):], v) for k, v in lightning_sd.items()), path)
    return path


def write_hf_segmenter(path: Path, lightning_sd: dict) -> Path:
    """HF ``segmenter.pth``: ``{'model': deeplab.* stripped, 'final_head': final_head.* stripped}``."""
    model = OrderedDict((k[len("deeplab."):], v) for k, v in lightning_sd.items() if k.startswith("deeplab."))
    head = OrderedDict((k[len("final_head."):], v) for k, v in lightning_sd.items() if k.startswith("final_head."))
    torch.save({"model": model, "final_head": head}, path)
    return path


def write_animepose_segmenter(path: Path, lightning_sd: dict) -> Path:
    """ComfyUI-AnimePose's ``character_bg_seg.safetensors`` (its ``scripts/make_weights.py``): every
    tensor of the authors' segmenter checkpoint under its Lightning name, dtypes kept (float32,
    int64 ``num_batches_tracked``), with that script's free-text metadata."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in lightning_sd.items()}, str(path),
              metadata={"source": "ShuhongChen/bizarre-pose-estimator character_bg_seg epoch=0096",
                        "license": "AGPL-3.0"})
    return path


def write_animepose_head(path: Path, lightning_sd: dict) -> Path:
    """ComfyUI-AnimePose's ``anime_pose_head.safetensors``: only the ``resnet.*`` and
    ``keypoint_head.*`` tensors of feat_concat+data.ckpt (its ``rcnn.*`` stripped), dtypes kept."""
    from safetensors.torch import save_file

    kept = {k: v.contiguous() for k, v in lightning_sd.items() if k.startswith(("resnet.", "keypoint_head."))}
    save_file(kept, str(path), metadata={"source": "ShuhongChen/bizarre-pose-estimator feat_concat+data.ckpt",
                                         "license": "AGPL-3.0", "note": "rcnn.* (Detectron2 R101) stripped; unused"})
    return path


def write_rules_json(path: Path, n: int = 1062) -> Path:
    """A rules JSON like the authors' (list of objects; only ``name`` is read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rules = [{"name": f"tag_{i:04d}", "category": 0, "tags": [f"tag_{i:04d}"], "count": 1000 - i % 1000} for i in range(n)]
    path.write_text(json.dumps(rules))
    return path
