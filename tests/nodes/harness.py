"""Loading the pack as ComfyUI does, over fake ComfyUI modules, with tiny random-weight models."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from unittest.mock import MagicMock, patch

import torch
from fake_comfy import make_comfy, make_comfy_api, make_folder_paths

from illustpose.checkpoints import save_safetensors
from illustpose.models.feat_match import FeatMatchPoseNet
from illustpose.models.segmenter import CharacterSegmenterNet
from illustpose.models.tagger import DanbooruTaggerNet

REPO = Path(__file__).resolve().parents[2]
TAG_NAMES = ["long_hair", "smile", "1girl", "solo", "simple_background"]

# Small working sizes keep CPU forwards fast; the code paths are those of the 256 px models.
SEGMENTER_HPARAMS = {"largs": {"bg_seg": {"size": 32}}}
TAGGER_HPARAMS = {"largs": {"danbooru_sfw": {"size": 32}}}
POSE_HPARAMS = {"largs": {"danbooru_coco": {"size": 64, "padding": 0.1}, "danbooru_sfw": {"size": 64}},
                "margs": {"size": 32}}


def write_tiny_weights(folder: Path) -> None:
    """Random-weight segmenter, tagger (5 tags) and feat_match pose model under their default names."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_safetensors(folder / "segmenter.safetensors", CharacterSegmenterNet().state_dict(),
                     model="segmenter", hparams=SEGMENTER_HPARAMS)
    save_safetensors(folder / "tagger.safetensors", DanbooruTaggerNet(len(TAG_NAMES)).state_dict(),
                     model="tagger", hparams=TAGGER_HPARAMS, extra={"tags": json.dumps(TAG_NAMES)})
    save_safetensors(folder / "feat_match+data.safetensors",
                     FeatMatchPoseNet(heatmap_size=32, trunk_input_size=64).state_dict(),
                     model="feat_match", hparams=POSE_HPARAMS)


@dataclass
class Pack:
    """The pack as ComfyUI imported it, its fake ComfyUI modules, the calls they logged, and the
    detectors the tests hold (as ComfyUI's node cache would)."""

    module: object
    modules: dict
    calls: list
    held: list = field(default_factory=list)

    @property
    def folder_paths(self):
        return self.modules["folder_paths"]

    @property
    def utils(self):
        return self.modules["comfy.utils"]

    @property
    def node_error(self) -> type:
        """The exception nodes raise for errors the user can fix."""
        return self.module.nodes._common.IllustposeNodeError

    def load(self, kind: str, weights: str = "auto"):
        """A detector ("segmenter", "tagger" or "pose") through its loader node."""
        node_id = {"segmenter": "LoadCharacterSegmenter|illustpose", "tagger": "LoadDanbooruTagger|illustpose",
                   "pose": "LoadPoseEstimator|illustpose"}[kind]
        return self.run(node_id, weights=weights, precision="fp32")[0][0]

    def node_classes(self) -> list:
        return asyncio.run(asyncio.run(self.module.comfy_entrypoint()).get_node_list())

    def node(self, node_id: str):
        return {cls.define_schema().node_id: cls for cls in self.node_classes()}[node_id]

    def defaults(self, node_id: str) -> dict:
        """The node's required widget inputs at their defaults (what a node fresh from the menu holds)."""
        return {i.id: i.default for i in self.node(node_id).define_schema().inputs
                if not i.optional and getattr(i, "default", None) is not None}

    def run(self, node_id: str, **inputs) -> tuple[tuple, dict | None]:
        """Execute a node the way ComfyUI's V3 executor does; returns (outputs, ui)."""
        out = self.node(node_id).execute(**inputs)
        return tuple(out.args), out.ui


def load_pack(base: Path, api_versions: tuple[str, ...] = ("v0_0_2", "latest")) -> Pack:
    """Import the repository's ``__init__.py`` as ComfyUI's ``load_custom_node`` does (module
    name = its path with '.' -> '_x_'), with fake ComfyUI modules whose ``comfy_api`` offers
    ``api_versions``; ``()`` is a ComfyUI older than the V3 API (``import comfy_api`` fails)."""
    calls: list = []
    modules = {**make_comfy(calls), "folder_paths": make_folder_paths(str(base)), "server": MagicMock()}
    modules.update(make_comfy_api(api_versions, modules["folder_paths"]) if api_versions
                   else {"comfy_api": None})  # None: import fails
    name = f"{REPO}_{'_'.join(api_versions) or 'old'}".replace(".", "_x_")
    with patch.dict(sys.modules, modules):
        spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return Pack(module, modules, calls)
