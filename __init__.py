"""ComfyUI entry point of the illustpose node pack (ComfyUI imports this file as a package).

The library, ``illustpose/``, sits beside this file.  ComfyUI does not put custom-node folders
on ``sys.path`` and installs only ``requirements.txt``, so unless ``illustpose`` is already
importable (``pip install`` of this repository) the bundled copy is registered under that name
here.  It is registered by file location rather than by adding this folder to ``sys.path``:
the folder also holds ``nodes/``, which would then shadow ComfyUI's own ``nodes`` module.

Inside ComfyUI (``folder_paths`` already imported) this exports ``comfy_entrypoint``, the V3
node API's entry point (ComfyUI >= 0.3.48; an older ComfyUI gets an ImportError saying to
update), and ``WEB_DIRECTORY``, the frontend extension in ``web/``.  Importing loads no model.

A clone named ``illustpose`` (as ``custom_nodes`` wants it) is itself importable as
``illustpose`` from the folder that holds it: ``python -m illustpose`` run there, or pytest
collecting the clone.  Imported under that name, this file hands over to the library: the
library, loaded by file location, takes this module's place in ``sys.modules`` (which is what
the import statement returns once this file has run), so ``illustpose.weights`` is the
library's module, never the top-level ``weights/`` folder.  No ``exec``: the Comfy Registry's
checks (``comfy node validate``) flag it.  Outside ComfyUI and under any other name it exports
nothing.
"""

import importlib.util
import sys
from pathlib import Path

_LIBRARY = Path(__file__).resolve().parent / "illustpose"


def _load_library() -> None:
    """Register the library as ``illustpose`` by its file location, then run it."""
    spec = importlib.util.spec_from_file_location("illustpose", _LIBRARY / "__init__.py",
                                                  submodule_search_locations=[str(_LIBRARY)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["illustpose"] = module
    spec.loader.exec_module(module)


if __name__ == "illustpose":  # the clone's root imported as the library: the library takes its place
    _load_library()
elif "folder_paths" in sys.modules:
    if importlib.util.find_spec("illustpose") is None:  # not installed: the bundled copy
        _load_library()

    from .nodes import comfy_entrypoint  # noqa: F401 - what ComfyUI looks for

    WEB_DIRECTORY = "./web"  # the frontend extension: text the nodes report, shown on the nodes
