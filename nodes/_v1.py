"""The part of ``comfy_api.latest.io`` the nodes use, rebuilt for ComfyUI without the V3 API.

ComfyUI before 0.3.48 has no ``comfy_api.latest``.  There :mod:`nodes._api` hands the node
modules this module as ``io`` instead, so every node keeps its one V3 definition
(``define_schema`` + ``execute``) and this file derives the V1 class contract from it:
``INPUT_TYPES``, ``RETURN_TYPES``, ``RETURN_NAMES``, ``OUTPUT_TOOLTIPS``, ``OUTPUT_IS_LIST``,
``OUTPUT_NODE``, ``INPUT_IS_LIST``, ``CATEGORY``, ``DESCRIPTION``, ``FUNCTION`` and
``IS_CHANGED``.  The two registrations cannot drift: there is nothing else to keep in step.

Constructor keywords are those of ComfyUI 0.3.64's ``comfy_api/latest/_io.py``; an unknown
keyword raises ``TypeError`` there and here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Schema", "NodeOutput", "ComfyNode", "Custom", "Image", "Mask", "Int", "Float", "String",
           "Boolean", "Combo"]

#: V3 keyword -> V1 option key, for the widget options the nodes use.
_V1_OPTION_KEYS = {
    "default": "default", "min": "min", "max": "max", "step": "step", "round": "round",
    "display_mode": "display", "multiline": "multiline", "placeholder": "placeholder",
    "dynamic_prompts": "dynamicPrompts", "label_on": "label_on", "label_off": "label_off",
    "force_input": "forceInput",
}


class _Input:
    def __init__(self, io_type: str, id: str, display_name: str | None = None, optional: bool = False,
                 tooltip: str | None = None, options: list | None = None, **widget):
        unknown = set(widget) - set(_V1_OPTION_KEYS)
        if unknown:
            raise TypeError(f"{io_type} input {id!r}: unexpected keyword(s) {sorted(unknown)}")
        self.io_type, self.id, self.optional, self.options = io_type, id, optional, options
        self.display_name, self.tooltip = display_name, tooltip
        self.widget = {_V1_OPTION_KEYS[k]: v for k, v in widget.items() if v is not None}

    def v1(self) -> tuple:
        """``(TYPE, options)``; a combo's TYPE is its list of choices, as V1 spells it."""
        labels = {k: v for k, v in (("display_name", self.display_name), ("tooltip", self.tooltip)) if v}
        return (list(self.options) if self.io_type == "COMBO" else self.io_type, {**self.widget, **labels})


@dataclass
class _Output:
    io_type: str
    id: str | None = None
    display_name: str | None = None
    tooltip: str | None = None
    is_output_list: bool = False


class _Type:
    """One socket type: ``Image.Input(...)`` / ``Image.Output(...)`` as in ``comfy_api.latest.io``."""

    def __init__(self, io_type: str):
        self.io_type = io_type

    def Input(self, id: str, **kwargs) -> _Input:  # noqa: N802 - the V3 spelling
        return _Input(self.io_type, id, **kwargs)

    def Output(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,  # noqa: N802
               is_output_list: bool = False) -> _Output:
        return _Output(self.io_type, id, display_name, tooltip, is_output_list)


Image, Mask, Int, Float, String, Boolean, Combo = (
    _Type(t) for t in ("IMAGE", "MASK", "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"))


def Custom(io_type: str) -> _Type:  # noqa: N802 - the V3 spelling
    """A socket type of any name (``POSE_KEYPOINT``, ``ILLUSTPOSE_SEGMENTER``...)."""
    return _Type(io_type)


@dataclass
class Schema:
    """The fields of ``io.Schema`` the nodes use."""

    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list | None = None
    outputs: list | None = None
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False


class NodeOutput:
    """``io.NodeOutput``: output values in order, plus an optional ``ui`` dict."""

    def __init__(self, *args: Any, ui: dict | None = None):
        self.args, self.ui = args, ui


class _FromSchema:
    """A V1 class attribute taken from ``define_schema()`` at its first read (on the class or an
    instance); the node class then keeps them all as plain attributes."""

    def __set_name__(self, owner, name: str):
        self.name = name

    def __get__(self, obj, cls):
        s = cls.define_schema()
        outputs = s.outputs or []
        attrs = {
            "CATEGORY": s.category,
            "DESCRIPTION": s.description,
            "OUTPUT_NODE": s.is_output_node,
            "INPUT_IS_LIST": s.is_input_list,
            "RETURN_TYPES": tuple(o.io_type for o in outputs),
            "RETURN_NAMES": tuple(o.display_name or o.io_type for o in outputs),
            "OUTPUT_TOOLTIPS": tuple(o.tooltip for o in outputs),
            "OUTPUT_IS_LIST": tuple(o.is_output_list for o in outputs),
        }
        for name, value in attrs.items():
            setattr(cls, name, value)
        return attrs[self.name]


class ComfyNode:
    """Base of every node when the V3 API is absent: the V1 contract, derived from the schema."""

    FUNCTION = "run_v1"
    CATEGORY, DESCRIPTION, OUTPUT_NODE, INPUT_IS_LIST = _FromSchema(), _FromSchema(), _FromSchema(), _FromSchema()
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS, OUTPUT_IS_LIST = (
        _FromSchema(), _FromSchema(), _FromSchema(), _FromSchema())

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "fingerprint_inputs" in cls.__dict__:  # V3's IS_CHANGED
            cls.IS_CHANGED = classmethod(lambda c, **inputs: c.fingerprint_inputs(**inputs))

    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802 - the V1 spelling
        types: dict = {"required": {}}
        for i in cls.define_schema().inputs or []:
            types.setdefault("optional" if i.optional else "required", {})[i.id] = i.v1()
        return types

    def run_v1(self, **inputs):
        out = type(self).execute(**inputs)
        return {"result": out.args, "ui": out.ui} if out.ui else out.args
