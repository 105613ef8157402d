"""Registration: the V3 entry point, every node documented, loading nothing at import, and a clear
refusal on a ComfyUI without the V3 API."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest
from harness import REPO, load_pack

EXPECTED_IDS = {
    "LoadCharacterSegmenter|illustpose", "LoadDanbooruTagger|illustpose", "LoadPoseEstimator|illustpose",
    "CharacterSegment|illustpose", "DanbooruTag|illustpose", "IllustratedPose|illustpose",
    "RenderOpenPose|illustpose", "SavePoseKeypoints|illustpose", "LoadPoseKeypoints|illustpose",
    "SaveCaptions|illustpose", "LoadImageFolder|illustpose",
    "PoseIndexAdd|illustpose", "PoseIndexQuery|illustpose", "PoseIndexInfo|illustpose",
}
#: nodes whose result depends on files, which must tell ComfyUI's cache when they changed
FILE_DEPENDENT = {"LoadImageFolder|illustpose", "LoadPoseKeypoints|illustpose", "PoseIndexQuery|illustpose",
                  "PoseIndexInfo|illustpose"}


def test_the_pack_exports_only_the_v3_entry_point(pack):
    assert callable(pack.module.comfy_entrypoint)
    assert not hasattr(pack.module, "NODE_CLASS_MAPPINGS")  # ComfyUI would read it first and ignore the entry point
    assert {c.define_schema().node_id for c in pack.node_classes()} == EXPECTED_IDS
    assert len(pack.node_classes()) == len(EXPECTED_IDS)  # no node listed twice


def test_every_node_input_and_output_is_documented(pack):
    for cls in pack.node_classes():
        s = cls.define_schema()
        assert s.node_id.endswith("|illustpose") and s.category.startswith("illustpose")
        assert s.display_name.endswith("(illustpose)")
        assert len(s.description) > 40, s.node_id
        for i in s.inputs:
            assert i.tooltip and i.tooltip.strip().endswith("."), (s.node_id, i.id)
        for o in s.outputs:
            assert o.tooltip and o.display_name, (s.node_id, o)


def test_file_dependent_nodes_fingerprint_their_inputs(pack):
    has = {c.define_schema().node_id for c in pack.node_classes() if "fingerprint_inputs" in vars(c)}
    assert has == FILE_DEPENDENT


def test_importing_the_pack_loads_no_model(tmp_path):
    pack = load_pack(tmp_path)  # an empty models folder: nothing to load, nothing fails
    assert pack.module.nodes.models._cache == {}
    assert pack.calls == []
    assert "illustpose" in pack.folder_paths.folder_names_and_paths  # the models/illustpose folder is registered
    assert pack.folder_paths.get_folder_paths("illustpose") == [str(tmp_path / "models" / "illustpose")]


def test_a_comfyui_without_the_v3_api_gets_a_clear_import_error(tmp_path):
    with pytest.raises(ImportError, match="illustpose needs ComfyUI 0.3.48 or newer"):
        load_pack(tmp_path, comfy_api=False)


def test_outside_comfyui_the_package_exports_nothing():
    assert "folder_paths" not in sys.modules
    spec = importlib.util.spec_from_file_location("illustpose_pack_outside", REPO / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # what pytest does with a package __init__.py above the tests
    assert not hasattr(module, "NODE_CLASS_MAPPINGS") and not hasattr(module, "comfy_entrypoint")


def test_the_bundled_library_is_importable_inside_comfyui(tmp_path):
    """ComfyUI neither installs the pack nor puts it on sys.path: ``import illustpose`` must still work."""
    script = textwrap.dedent(f"""
        import asyncio, importlib.util, json, sys
        sys.path = [p for p in sys.path if p not in ("", {str(REPO)!r})]
        sys.path.insert(0, {str(REPO / "tests" / "nodes")!r})
        installed = importlib.util.find_spec("illustpose") is not None
        from fake_comfy import make_comfy, make_comfy_api, make_folder_paths
        sys.modules.update(make_comfy([]))
        sys.modules.update(make_comfy_api())
        sys.modules["folder_paths"] = make_folder_paths({str(tmp_path)!r})
        name = {str(REPO).replace(".", "_x_")!r}
        spec = importlib.util.spec_from_file_location(name, {str(REPO / "__init__.py")!r})
        pack = importlib.util.module_from_spec(spec)
        sys.modules[name] = pack
        spec.loader.exec_module(pack)
        nodes = asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
        print(json.dumps({{"installed": installed, "file": sys.modules["illustpose"].__file__,
                          "nodes": len(nodes)}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["nodes"] == len(EXPECTED_IDS)
    if not got["installed"]:  # pip-installed copies are used as they are
        assert got["file"] == str(REPO / "illustpose" / "__init__.py")
