"""Node-test fixtures: the pack loaded the way ComfyUI loads it, once per node API, over a fake
ComfyUI folder holding tiny random-weight models."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Pack, load_pack, write_tiny_weights

# Every library module the nodes import, imported now: patch.dict(sys.modules) in load_pack
# removes on exit the modules first imported inside it, and the tests must share the nodes' classes.
import illustpose.checkpoints  # noqa: F401
import illustpose.geometry  # noqa: F401
import illustpose.images  # noqa: F401
import illustpose.keypoints  # noqa: F401
import illustpose.pipeline  # noqa: F401
import illustpose.render  # noqa: F401
import illustpose.weights  # noqa: F401


@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory) -> Path:
    """A fake ComfyUI base folder: models/illustpose with tiny weights, input/, output/."""
    base = tmp_path_factory.mktemp("comfyui")
    write_tiny_weights(base / "models" / "illustpose")
    return base


@pytest.fixture(scope="session")
def packs(comfy_base) -> dict:
    return {"v1": load_pack(comfy_base, v3=False), "v3": load_pack(comfy_base, v3=True)}


def _fresh(p: Pack) -> Pack:
    p.calls.clear()
    p.utils.PROGRESS_BAR_HOOK = None
    return p


@pytest.fixture(params=["v1", "v3"])
def pack(request, packs) -> Pack:
    """The pack under each node API; ``calls`` is emptied and the progress hook removed first."""
    return _fresh(packs[request.param])


@pytest.fixture
def pack_v3(packs) -> Pack:
    """The pack under the V3 API only, for checks of what both APIs share (the node's ``execute``)."""
    return _fresh(packs["v3"])
