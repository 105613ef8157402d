"""Registration: one entry point per node API, the same nodes in both, every node documented."""

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
WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def test_v3_exports_only_the_entry_point(packs):
    v3 = packs["v3"].module
    assert callable(v3.comfy_entrypoint)
    assert not hasattr(v3, "NODE_CLASS_MAPPINGS")  # ComfyUI would read it first and ignore the entry point


def test_v1_exports_only_the_mappings(packs):
    v1 = packs["v1"].module
    assert not hasattr(v1, "comfy_entrypoint")
    assert set(v1.NODE_CLASS_MAPPINGS) == EXPECTED_IDS
    assert set(v1.NODE_DISPLAY_NAME_MAPPINGS) == EXPECTED_IDS


def test_both_apis_register_the_same_nodes(packs):
    def schemas(p):
        return {c.define_schema().node_id: c.define_schema() for c in p.node_classes()}

    v1, v3 = schemas(packs["v1"]), schemas(packs["v3"])
    assert set(v1) == set(v3) == EXPECTED_IDS
    for node_id in EXPECTED_IDS:
        a, b = v1[node_id], v3[node_id]
        assert (a.display_name, a.category, a.description) == (b.display_name, b.category, b.description)
        assert [i.id for i in a.inputs] == [i.id for i in b.inputs]
        assert [o.display_name for o in a.outputs] == [o.display_name for o in b.outputs]
        assert [o.is_output_list for o in a.outputs] == [o.is_output_list for o in b.outputs]
        assert [i.optional for i in a.inputs] == [i.optional for i in b.inputs]


def test_every_node_input_and_output_is_documented(pack):
    for cls in pack.node_classes():
        s = cls.define_schema()
        assert s.node_id.endswith("|illustpose") and s.category.startswith("illustpose")
        assert s.display_name.endswith("(illustpose)")
        assert len(s.description) > 40, s.node_id
        for i in s.inputs:
            assert i.tooltip and i.tooltip.strip(), (s.node_id, i.id)
        for o in s.outputs:
            assert o.tooltip and o.display_name, (s.node_id, o)


def test_v1_contract_is_derived_from_the_schema(packs):
    for node_id, cls in packs["v1"].module.NODE_CLASS_MAPPINGS.items():
        s = cls.define_schema()
        types = cls.INPUT_TYPES()
        assert list(types["required"]) == [i.id for i in s.inputs if not i.optional]
        assert list(types.get("optional", {})) == [i.id for i in s.inputs if i.optional]
        for section in types.values():
            for kind, opts in section.values():
                assert isinstance(kind, list) or isinstance(kind, str)
                assert opts["tooltip"]
        obj = cls()  # ComfyUI reads these on instances as well as on the class
        assert obj.RETURN_TYPES == cls.RETURN_TYPES == tuple(o.io_type for o in s.outputs)
        assert obj.RETURN_NAMES == tuple(o.display_name for o in s.outputs)
        assert len(obj.OUTPUT_TOOLTIPS) == len(obj.OUTPUT_IS_LIST) == len(obj.RETURN_TYPES)
        assert (obj.CATEGORY, obj.DESCRIPTION, obj.OUTPUT_NODE, obj.INPUT_IS_LIST) == (
            s.category, s.description, s.is_output_node, s.is_input_list)
        assert callable(getattr(obj, obj.FUNCTION))
        assert hasattr(cls, "IS_CHANGED") == (node_id in {
            "LoadImageFolder|illustpose", "LoadPoseKeypoints|illustpose", "PoseIndexQuery|illustpose",
            "PoseIndexInfo|illustpose"})


def test_v1_combo_is_a_list_and_widgets_keep_their_options(packs):
    types = packs["v1"].module.NODE_CLASS_MAPPINGS["IllustratedPose|illustpose"].INPUT_TYPES()["required"]
    joints, opts = types["heatmap_joint"]
    assert joints[0] == "all" and "left_wrist" in joints and opts["default"] == "all"
    assert types["resolution"] == ("INT", {"default": 512, "min": 0, "max": 16384, "step": 64,
                                           "tooltip": types["resolution"][1]["tooltip"]})
    assert types["image"][0] == "IMAGE" and types["pose_model"][0] == "ILLUSTPOSE_POSE_MODEL"


def test_importing_the_pack_loads_no_model(tmp_path):
    pack = load_pack(tmp_path, v3=True)  # an empty models folder: nothing to load, nothing fails
    assert pack.module.nodes.models._cache == {}
    assert pack.calls == []
    assert "illustpose" in pack.folder_paths.folder_names_and_paths  # the models/illustpose folder is registered
    assert pack.folder_paths.get_folder_paths("illustpose") == [str(tmp_path / "models" / "illustpose")]


def test_outside_comfyui_the_package_exports_nothing():
    assert "folder_paths" not in sys.modules
    spec = importlib.util.spec_from_file_location("illustpose_pack_outside", REPO / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # what pytest does with a package __init__.py above the tests
    assert not hasattr(module, "NODE_CLASS_MAPPINGS") and not hasattr(module, "comfy_entrypoint")


def test_the_bundled_library_is_importable_inside_comfyui(tmp_path):
    """ComfyUI neither installs the pack nor puts it on sys.path: ``import illustpose`` must still work."""
    script = textwrap.dedent(f"""
        import importlib.util, json, sys
        sys.path = [p for p in sys.path if p not in ("", {str(REPO)!r})]
        sys.path.insert(0, {str(REPO / "tests" / "nodes")!r})
        installed = importlib.util.find_spec("illustpose") is not None
        from fake_comfy import make_comfy, make_folder_paths
        sys.modules.update(make_comfy([]))
        sys.modules["folder_paths"] = make_folder_paths({str(tmp_path)!r})
        sys.modules["comfy_api"] = None
        name = {str(REPO).replace(".", "_x_")!r}
        spec = importlib.util.spec_from_file_location(name, {str(REPO / "__init__.py")!r})
        pack = importlib.util.module_from_spec(spec)
        sys.modules[name] = pack
        spec.loader.exec_module(pack)
        print(json.dumps({{"installed": installed, "file": sys.modules["illustpose"].__file__,
                          "nodes": len(pack.NODE_CLASS_MAPPINGS)}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["nodes"] == len(EXPECTED_IDS)
    if not got["installed"]:  # pip-installed copies are used as they are
        assert got["file"] == str(REPO / "illustpose" / "__init__.py")


@pytest.mark.parametrize("api", ["v1", "v3"])
def test_execution_in_the_v1_shape(packs, api):
    """A V1 run returns a tuple, or {"result", "ui"} when there is a ui (what ComfyUI merges)."""
    pack = packs[api]
    if api == "v1":
        obj = pack.module.NODE_CLASS_MAPPINGS["LoadPoseEstimator|illustpose"]()
        result = getattr(obj, obj.FUNCTION)(weights="auto", precision="fp32")
        assert isinstance(result, tuple) and len(result) == 1
    else:
        out = pack.node("LoadPoseEstimator|illustpose").execute(weights="auto", precision="fp32")
        assert len(out.args) == 1 and out.ui is None
