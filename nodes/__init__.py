"""The illustpose ComfyUI nodes, one module per area; each module's ``NODES`` is its table of contents.

With ComfyUI's V3 API the pack registers through :func:`comfy_entrypoint`; without it, through
``NODE_CLASS_MAPPINGS`` (the classes then carry the V1 contract derived by :mod:`._v1`).  The
root ``__init__.py`` exports exactly one of the two.
"""

from __future__ import annotations

from . import files, folder, index, models, pose, render, segment, tag
from ._api import V3, ComfyExtension

NODE_LIST = [*models.NODES, *segment.NODES, *tag.NODES, *pose.NODES, *render.NODES, *files.NODES, *folder.NODES,
             *index.NODES]

if V3:
    class IllustposeExtension(ComfyExtension):
        async def get_node_list(self):
            return list(NODE_LIST)

    async def comfy_entrypoint() -> IllustposeExtension:
        return IllustposeExtension()
else:
    NODE_CLASS_MAPPINGS = {cls.define_schema().node_id: cls for cls in NODE_LIST}
    NODE_DISPLAY_NAME_MAPPINGS = {cls.define_schema().node_id: cls.define_schema().display_name for cls in NODE_LIST}
