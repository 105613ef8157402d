"""The illustpose ComfyUI nodes, one module per area; each module's ``NODES`` is its table of contents.

The pack registers through :func:`comfy_entrypoint` (ComfyUI's V3 API); the root
``__init__.py`` exports it.
"""

from __future__ import annotations

from . import files, folder, index, models, pose, render, segment, tag
from ._api import ComfyExtension

NODE_LIST = [*models.NODES, *segment.NODES, *tag.NODES, *pose.NODES, *render.NODES, *files.NODES, *folder.NODES,
             *index.NODES]


class IllustposeExtension(ComfyExtension):
    async def get_node_list(self):
        return list(NODE_LIST)


async def comfy_entrypoint() -> IllustposeExtension:
    return IllustposeExtension()
