"""Example workflows: UI-format JSON that ComfyUI's frontend loads without missing nodes or widget errors,
under short titles in the template browser.

Each node type must be one of the pack's or a core node listed below (ComfyUI 0.3.64, widget
inputs in the order the frontend stores them), and ``widgets_values`` must match those widgets in
order and type -- the drift that UI workflows are prone to when inputs change.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from harness import REPO
from PIL import Image

WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
SEED_CONTROL = ("fixed", "increment", "decrement", "randomize")

#: Core nodes used by the examples: widgets (name, type, options or None), extra stored values
#: after a widget, socket inputs and output types (ComfyUI 0.3.64 nodes.py / comfy_extras).
CORE_NODES = {
    "LoadImage": {"widgets": [("image", "COMBO", None)], "after": {"image": ("image",)}, "inputs": {},
                  "outputs": ["IMAGE", "MASK"]},
    "PreviewImage": {"widgets": [], "inputs": {"images": "IMAGE"}, "outputs": []},
    "SaveImage": {"widgets": [("filename_prefix", "STRING", None)], "inputs": {"images": "IMAGE"}, "outputs": []},
    "MaskToImage": {"widgets": [], "inputs": {"mask": "MASK"}, "outputs": ["IMAGE"]},
    "PreviewAny": {"widgets": [], "inputs": {"source": "*"}, "outputs": []},
    "CheckpointLoaderSimple": {"widgets": [("ckpt_name", "COMBO", None)], "inputs": {},
                               "outputs": ["MODEL", "CLIP", "VAE"]},
    "CLIPTextEncode": {"widgets": [("text", "STRING", None)], "inputs": {"clip": "CLIP"}, "outputs": ["CONDITIONING"]},
    "EmptyLatentImage": {"widgets": [("width", "INT", None), ("height", "INT", None), ("batch_size", "INT", None)],
                         "inputs": {}, "outputs": ["LATENT"]},
    "KSampler": {"widgets": [("seed", "INT", None), ("steps", "INT", None), ("cfg", "FLOAT", None),
                             ("sampler_name", "COMBO", ("euler", "euler_ancestral", "dpmpp_2m")),
                             ("scheduler", "COMBO", ("normal", "karras", "simple")), ("denoise", "FLOAT", None)],
                 "after": {"seed": SEED_CONTROL},
                 "inputs": {"model": "MODEL", "positive": "CONDITIONING", "negative": "CONDITIONING",
                            "latent_image": "LATENT"},
                 "outputs": ["LATENT"]},
    "VAEDecode": {"widgets": [], "inputs": {"samples": "LATENT", "vae": "VAE"}, "outputs": ["IMAGE"]},
    "ControlNetLoader": {"widgets": [("control_net_name", "COMBO", None)], "inputs": {}, "outputs": ["CONTROL_NET"]},
    "ControlNetApplyAdvanced": {
        "widgets": [("strength", "FLOAT", None), ("start_percent", "FLOAT", None), ("end_percent", "FLOAT", None)],
        "inputs": {"positive": "CONDITIONING", "negative": "CONDITIONING", "control_net": "CONTROL_NET",
                   "image": "IMAGE", "vae": "VAE"},
        "outputs": ["CONDITIONING", "CONDITIONING"]},
    "Note": {"widgets": [("text", "STRING", None)], "inputs": {}, "outputs": []},  # frontend-only
}
WIDGET_TYPES = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool, "COMBO": str}


def pack_node_types(pack) -> dict:
    """The pack's nodes in the table's shape, from their V3 schemas (what ComfyUI serves in /object_info:
    combos and unforced INT/FLOAT/STRING/BOOLEAN inputs are widgets, in schema order)."""
    table = {}
    for cls in pack.node_classes():
        schema = cls.define_schema()
        widgets, inputs, required = [], {}, set()
        for i in schema.inputs:
            if i.io_type == "COMBO":
                widgets.append((i.id, "COMBO", tuple(i.options)))
            elif i.io_type in WIDGET_TYPES and not i.force_input:
                widgets.append((i.id, i.io_type, None))
            else:
                inputs[i.id] = i.io_type
                required |= set() if i.optional else {i.id}
        table[schema.node_id] = {"widgets": widgets, "inputs": inputs, "required": required,
                                 "outputs": [o.io_type for o in schema.outputs],
                                 "names": [o.display_name or o.io_type for o in schema.outputs]}
    return table


@pytest.fixture(scope="module")
def node_types(loaded_pack):
    return {**CORE_NODES, **pack_node_types(loaded_pack)}


def test_there_are_four_examples_each_with_a_short_title_and_a_thumbnail():
    """ComfyUI 0.3.64's template browser (frontend 1.27) shows a pack's template under its file name, and
    as its description the same name with '-' and '_' as spaces: the file name is the title."""
    assert [w.stem for w in WORKFLOWS] == ["Annotate a folder", "Mask, tags and pose", "Pose reference search",
                                           "Pose to ControlNet"]
    for w in WORKFLOWS:
        assert len(w.stem) <= 24 and re.fullmatch(r"[A-Z][A-Za-z ,]+", w.stem), w.stem  # fits a card, reads as words
        with Image.open(w.with_suffix(".jpg")) as thumb:
            assert thumb.format == "JPEG" and thumb.width >= 256


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_structure(path: Path, node_types):
    wf = json.loads(path.read_text())
    assert wf["version"] == 0.4 and {"nodes", "links", "groups", "config", "extra"} <= set(wf)
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]) and wf["last_node_id"] >= max(nodes)
    assert wf["last_link_id"] >= max(link[0] for link in wf["links"])
    assert sorted(n["order"] for n in wf["nodes"]) == list(range(len(nodes)))
    for n in wf["nodes"]:  # the fields the frontend's workflow schema (zod, version 0.4) requires
        assert isinstance(n["id"], int) and isinstance(n["flags"], dict) and isinstance(n["properties"], dict)
        assert all(len(n[k]) == 2 and all(isinstance(v, (int, float)) for v in n[k]) for k in ("pos", "size"))
        assert isinstance(n["mode"], int) and isinstance(n["widgets_values"], list)
        assert n["type"] in node_types, f"{path.name}: unknown node type {n['type']}"
        spec = node_types[n["type"]]
        values = list(n["widgets_values"])
        for name, kind, options in spec["widgets"]:
            assert values, f"{path.name} node {n['id']} ({n['type']}): no value for widget {name}"
            value = values.pop(0)
            assert isinstance(value, WIDGET_TYPES[kind]) and (kind != "INT" or not isinstance(value, bool)), (
                f"{path.name} node {n['id']}: {name}={value!r} is not {kind}")
            assert options is None or value in options, f"{path.name} node {n['id']}: {name}={value!r} not in {options}"
            if name in spec.get("after", {}):
                assert values.pop(0) in spec["after"][name]
        assert values == [], f"{path.name} node {n['id']} ({n['type']}): extra widgets_values {values}"
        sockets = [i for i in n["inputs"] if "widget" not in i]
        assert [(i["name"], i["type"]) for i in sockets] == [(k, t) for k, t in spec["inputs"].items()
                                                             if any(i["name"] == k for i in sockets)]
        for i in n["inputs"]:  # a widget fed by a link: listed after the sockets, its value kept in widgets_values
            if "widget" in i:
                assert i["widget"] == {"name": i["name"]} and i["link"] is not None
                assert (i["name"], i["type"]) in {(name, kind) for name, kind, _ in spec["widgets"]}
        assert [o["type"] for o in n["outputs"]] == spec["outputs"]
        if "names" in spec:
            assert [o["name"] for o in n["outputs"]] == spec["names"]
            linked = {i["name"] for i in n["inputs"] if i["link"] is not None}
            assert spec["required"] <= linked, f"{path.name} node {n['id']}: unconnected {spec['required'] - linked}"
    for g in wf["groups"]:
        assert isinstance(g["title"], str) and len(g["bounding"]) == 4
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        out, inp = nodes[src]["outputs"][src_slot], nodes[dst]["inputs"][dst_slot]
        assert out["type"] == kind and inp["type"] in (kind, "*"), f"{path.name}: link {link_id} {kind} -> {inp}"
        assert link_id in out["links"] and inp["link"] == link_id


def test_reference_search_names_each_reference_after_its_file():
    """Load Image Folder's filenames feed Pose Index Add's sources: results carry the reference's file name
    instead of image_<hash>.png."""
    wf = json.loads((REPO / "example_workflows" / "Pose reference search.json").read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    wired = {(nodes[src]["type"], nodes[src]["outputs"][s]["name"], nodes[dst]["type"], nodes[dst]["inputs"][d]["name"])
             for _, src, s, dst, d, _ in wf["links"]}
    assert ("LoadImageFolder|illustpose", "filenames", "PoseIndexAdd|illustpose", "sources") in wired
