"""Registration: the V3 entry point through the versioned API (latest as the fallback), every node
documented, loading nothing at import, a clear refusal on a ComfyUI without the V3 API, error
titles, the web extension, and what the Comfy Registry package holds."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import subprocess
import sys
import textwrap
import traceback
from pathlib import PurePosixPath

import pytest
from harness import REPO, load_pack
from PIL import Image

EXPECTED_IDS = {
    "LoadCharacterSegmenter|illustpose", "LoadDanbooruTagger|illustpose", "LoadPoseEstimator|illustpose",
    "CharacterSegment|illustpose", "DanbooruTag|illustpose", "IllustratedPose|illustpose",
    "RenderOpenPose|illustpose", "SavePoseKeypoints|illustpose", "LoadPoseKeypoints|illustpose",
    "SaveCaptions|illustpose", "LoadImageFolder|illustpose",
    "PoseIndexAdd|illustpose", "PoseIndexQuery|illustpose", "PoseIndexInfo|illustpose",
}
#: nodes whose result depends on files, which must tell ComfyUI's cache when they changed
FILE_DEPENDENT = {"LoadImageFolder|illustpose", "LoadPoseKeypoints|illustpose", "PoseIndexAdd|illustpose",
                  "PoseIndexQuery|illustpose", "PoseIndexInfo|illustpose", "LoadCharacterSegmenter|illustpose",
                  "LoadDanbooruTagger|illustpose", "LoadPoseEstimator|illustpose"}


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
    base = pack.module.nodes._api.io.ComfyNode  # ComfyUI's own default does not count (first_real_override)
    has = {c.define_schema().node_id for c in pack.node_classes()
           if any("fingerprint_inputs" in vars(k) for k in c.__mro__[:c.__mro__.index(base)])}
    assert has == FILE_DEPENDENT


def test_importing_the_pack_loads_no_model(tmp_path):
    pack = load_pack(tmp_path)  # an empty models folder: nothing to load, nothing fails
    assert len(pack.module.nodes.models._cache) == 0
    assert pack.calls == []
    assert "illustpose" in pack.folder_paths.folder_names_and_paths  # the models/illustpose folder is registered
    assert pack.folder_paths.get_folder_paths("illustpose") == [str(tmp_path / "models" / "illustpose")]


def test_the_versioned_api_is_preferred_and_latest_is_the_fallback(pack, tmp_path):
    assert pack.module.nodes._api.API_VERSION == "comfy_api.v0_0_2"  # the session's pack: both offered
    only_latest = load_pack(tmp_path, api_versions=("latest",))  # a ComfyUI that dropped v0_0_2
    assert only_latest.module.nodes._api.API_VERSION == "comfy_api.latest"
    assert {c.define_schema().node_id for c in only_latest.node_classes()} == EXPECTED_IDS
    only_versioned = load_pack(tmp_path, api_versions=("v0_0_2",))
    assert only_versioned.module.nodes._api.API_VERSION == "comfy_api.v0_0_2"
    assert len(only_versioned.node_classes()) == len(EXPECTED_IDS)


def test_a_comfyui_without_the_v3_api_gets_a_clear_import_error(tmp_path):
    with pytest.raises(ImportError, match="illustpose needs ComfyUI 0.3.48 or newer .*comfy_api.v0_0_2 or "
                                          "comfy_api.latest.*update ComfyUI"):
        load_pack(tmp_path, api_versions=())


def test_node_errors_read_illustpose_then_the_problem(pack):
    """ComfyUI's error title is execution.py's full_type_name: module + qualified name, module left out for builtins."""
    def full_type_name(klass):  # ComfyUI 0.3.64, execution.py
        module = klass.__module__
        return klass.__qualname__ if module == "builtins" else module + "." + klass.__qualname__

    with pytest.raises(pack.node_error) as e:
        pack.load("segmenter", "gone.safetensors")
    assert full_type_name(e.type) == "illustpose"
    assert traceback.format_exception_only(e.value)[-1].startswith("illustpose: weights 'gone.safetensors' are no")


def test_the_web_extension_is_registered_and_shows_text_on_the_nodes(pack):
    web = REPO / pack.module.WEB_DIRECTORY
    script = (web / "illustpose.js").read_text()
    assert "registerExtension" in script and "onExecuted" in script and '|illustpose"' in script
    assert "serialize = false" in script  # the shown text never enters the saved workflow or the prompt


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


def _ignored(path: str, patterns: list[str]) -> bool:
    """gitignore matching (the subset .comfyignore uses: folders, globs, negation), last match wins."""
    ignored = False
    for pattern in patterns:
        negated, pattern = pattern.startswith("!"), pattern.lstrip("!")
        if pattern.endswith("/"):  # a folder at any depth
            hit = any(fnmatch.fnmatch(part, pattern[:-1]) for part in PurePosixPath(path).parts[:-1])
        elif "/" in pattern:
            hit = fnmatch.fnmatch(path, pattern)
        else:
            hit = fnmatch.fnmatch(PurePosixPath(path).name, pattern)
        ignored = (not negated) if hit else ignored
    return ignored


def test_the_registry_package_leaves_out_tests_benchmarks_ci_and_local_weights():
    lines = (REPO / ".comfyignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    left_out = ["tests/nodes/harness.py", "benchmarks/RESULTS.md", ".ci/run", "weights/segmenter.safetensors",
                "weights/tags.txt", "weights/bizarre_pose_models.zip", "weights/sub/feat_match.ckpt", "x/model.pth",
                "nodes/__pycache__/models.cpython-311.pyc", "illustpose.egg-info/PKG-INFO", "refs.sqlite"]
    shipped = ["__init__.py", "nodes/_common.py", "illustpose/registry.py", "web/illustpose.js", "README.md",
               "pyproject.toml", "requirements.txt", "weights/README.md", "docs/icon.png", ".comfyignore",
               *(p.relative_to(REPO).as_posix() for p in (REPO / "example_workflows").iterdir())]
    assert [p for p in left_out if not _ignored(p, patterns)] == []
    assert [p for p in shipped if _ignored(p, patterns)] == []


def test_the_registry_fields_are_complete():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    comfy = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"]
    assert all(comfy.get(k) for k in ("PublisherId", "DisplayName", "Icon", "requires-comfyui"))
    assert "web" not in comfy  # WEB_DIRECTORY registers web/; both would load the extension twice
    prefix = "https://raw.githubusercontent.com/illustpose/illustpose/main/"
    assert comfy["Icon"].startswith(prefix)
    with Image.open(REPO / comfy["Icon"][len(prefix):]) as icon:  # the file the URL serves once pushed
        assert icon.format == "PNG" and icon.width == icon.height >= 128
