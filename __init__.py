"""ComfyUI entry point of the illustpose node pack (ComfyUI imports this file as a package).

The library, ``illustpose/``, sits beside this file.  ComfyUI does not put custom-node folders
on ``sys.path`` and installs only ``requirements.txt``, so unless ``illustpose`` is already
importable (``pip install`` of this repository) the bundled copy is registered under that name
here.  It is registered by file location rather than by adding this folder to ``sys.path``:
the folder also holds ``nodes/``, which would then shadow ComfyUI's own ``nodes`` module.

Inside ComfyUI (``folder_paths`` already imported) this exports ``comfy_entrypoint``, the V3
node API's entry point (ComfyUI >= 0.3.48; an older ComfyUI gets an ImportError saying to
update).  Outside ComfyUI it exports nothing: pytest imports every package ``__init__.py``
above a test, and this folder is one.  Importing loads no model.
"""

import importlib.util
import sys
from pathlib import Path


def _bundle_library() -> None:
    if importlib.util.find_spec("illustpose") is not None:
        return
    package = Path(__file__).resolve().parent / "illustpose"
    spec = importlib.util.spec_from_file_location("illustpose", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["illustpose"] = module
    spec.loader.exec_module(module)


if "folder_paths" in sys.modules:
    _bundle_library()

    from .nodes import comfy_entrypoint  # noqa: F401 - what ComfyUI looks for
