"""Node-test fixtures: the pack loaded the way ComfyUI loads it, over a fake ComfyUI folder holding
tiny random-weight models."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Pack, load_pack, write_tiny_weights

# Every library module the nodes import, imported now: patch.dict(sys.modules) in load_pack
# removes on exit the modules first imported inside it, and the tests must share the nodes' classes.
import illustpose.captions  # noqa: F401
import illustpose.characters  # noqa: F401
import illustpose.checkpoints  # noqa: F401
import illustpose.datasets  # noqa: F401
import illustpose.geometry  # noqa: F401
import illustpose.heatmaps  # noqa: F401
import illustpose.images  # noqa: F401
import illustpose.keypoints  # noqa: F401
import illustpose.models.feat_match  # noqa: F401
import illustpose.outputs  # noqa: F401
import illustpose.pipeline  # noqa: F401
import illustpose.registry  # noqa: F401
import illustpose.render  # noqa: F401
import illustpose.retrieval.ingest  # noqa: F401
import illustpose.retrieval.preview  # noqa: F401
import illustpose.weights  # noqa: F401


@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory) -> Path:
    """A fake ComfyUI base folder: models/illustpose with tiny weights, input/, output/."""
    base = tmp_path_factory.mktemp("comfyui")
    write_tiny_weights(base / "models" / "illustpose")
    return base


@pytest.fixture(scope="session")
def loaded_pack(comfy_base) -> Pack:
    pack = load_pack(comfy_base)
    # held for the session, as ComfyUI's node cache holds a loader's output: the pack's own
    # cache is weak, and the tests would otherwise build the same networks again and again
    pack.held = [pack.load(kind) for kind in ("segmenter", "tagger", "pose")]
    return pack


@pytest.fixture
def pack(loaded_pack) -> Pack:
    """The pack; ``calls`` is emptied and the progress hook removed first."""
    loaded_pack.calls.clear()
    loaded_pack.utils.PROGRESS_BAR_HOOK = None
    return loaded_pack
