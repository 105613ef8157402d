"""Stand-ins for the ComfyUI modules the nodes import, so node tests run without ComfyUI.

Each stand-in keeps the names, signatures and behaviour the nodes rely on, as ComfyUI 0.3.64
defines them (``comfy/model_management.py``, ``comfy/model_patcher.py``, ``comfy/utils.py``,
``folder_paths.py``, ``comfy_api/latest/_io.py``, ``_ui.py`` and the versioned ``comfy_api/v0_0_2``); the
tests put them in ``sys.modules`` with ``patch.dict``, as ComfyUI's own unit tests mock ``nodes``
and ``server``.
"""

from __future__ import annotations

import importlib
import os
import random
import types
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image


def _module(name: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m


# --------------------------------------------------------------------------- comfy


class InterruptProcessingException(Exception):
    pass


class LoadedModel:
    """``comfy.model_management.LoadedModel``: a *weak* reference to a patcher loaded on its load
    device (ComfyUI never keeps a model alive by having loaded it)."""

    def __init__(self, model):
        self._model = weakref.ref(model)
        self.device = model.load_device

    @property
    def model(self):
        return self._model()

    def model_memory(self):
        return self.model.model_size()

    def model_unload(self, memory_to_free=None, unpatch_weights=True):
        self.model.detach(unpatch_weights)
        return True

    def __eq__(self, other):
        return self.model is other.model


def make_model_patcher(module_size) -> types.ModuleType:
    """``comfy.model_patcher`` with ``ModelPatcher`` as it treats a plain ``nn.Module`` (one
    without ``comfy.ops`` casting layers): loading moves every module to the load device,
    detaching moves it back to the offload device."""

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
            self.size, self.model, self.load_device, self.offload_device = size, model, load_device, offload_device
            self.parent = None
            if getattr(model, "device", None) is None:
                model.device = offload_device
            if not hasattr(model, "model_loaded_weight_memory"):
                model.model_loaded_weight_memory = 0
            self.model_size()

        def model_size(self):
            if self.size <= 0:
                self.size = module_size(self.model)
            return self.size

        def loaded_size(self):
            return self.model.model_loaded_weight_memory

        def current_loaded_device(self):
            return self.model.device

        def is_clone(self, other):
            return hasattr(other, "model") and self.model is other.model

        def model_patches_models(self):
            return []

        def partially_load(self, device_to, extra_memory=0, force_patch_weights=False):
            before = self.model.model_loaded_weight_memory
            self.model.to(device_to)
            self.model.device, self.model.model_loaded_weight_memory = device_to, self.model_size()
            return self.model_size() - before

        def detach(self, unpatch_all=True):
            if unpatch_all:
                self.model.to(self.offload_device)
                self.model.device, self.model.model_loaded_weight_memory = self.offload_device, 0
            return self.model

    return _module("comfy.model_patcher", ModelPatcher=ModelPatcher)


def make_comfy(calls: list) -> dict[str, types.ModuleType]:
    """``comfy``, ``comfy.model_management``, ``comfy.model_patcher`` and ``comfy.utils``; model
    loads and unloads are logged in ``calls``.

    ``comfy.utils.PROGRESS_BAR_HOOK`` is called on every progress update, as ComfyUI's
    ``main.py hijack_progress`` installs it (which first raises if the user pressed Cancel).
    The memory manager keeps ComfyUI's list of loaded models (``current_loaded_models``, weak
    references), loads with ``load_models_gpu`` and unloads with ``free_memory`` /
    ``unload_all_models`` (what ``POST /free`` calls); its ``free_memory`` unloads every other
    model of the device, as on a GPU with no memory to spare.  The interrupt flag is
    ``POST /interrupt``'s.
    """
    cpu = torch.device("cpu")
    interrupted = [False]

    def module_size(module):
        return sum(t.nelement() * t.element_size() for t in module.state_dict().values())

    def cleanup_models():
        mm.current_loaded_models[:] = [m for m in mm.current_loaded_models if m.model is not None]

    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        calls.append(("load_models_gpu", tuple(type(m.model).__name__ for m in models), memory_required,
                      force_full_load))
        cleanup_models()
        for m in models:
            loaded = LoadedModel(m)
            if loaded in mm.current_loaded_models:
                mm.current_loaded_models.remove(loaded)
            m.partially_load(m.load_device, 1e32, force_patch_weights)
            mm.current_loaded_models.insert(0, loaded)

    def free_memory(memory_required, device, keep_loaded=[]):
        calls.append(("free_memory", memory_required))
        cleanup_models()
        unloaded = [m for m in mm.current_loaded_models if m.device == device and m not in keep_loaded]
        for m in unloaded:
            m.model_unload()
            mm.current_loaded_models.remove(m)
        return unloaded

    def throw_exception_if_processing_interrupted():
        if interrupted[0]:
            interrupted[0] = False
            raise InterruptProcessingException()

    mm = _module(
        "comfy.model_management",
        get_torch_device=lambda: cpu,
        unet_offload_device=lambda: cpu,
        intermediate_device=lambda: cpu,
        soft_empty_cache=lambda force=False: calls.append("soft_empty_cache"),
        module_size=module_size,
        current_loaded_models=[],
        load_models_gpu=load_models_gpu,
        load_model_gpu=lambda model: load_models_gpu([model]),
        loaded_models=lambda only_currently_used=False: [m.model for m in mm.current_loaded_models
                                                         if m.model is not None],
        free_memory=free_memory,
        unload_all_models=lambda: free_memory(1e30, mm.get_torch_device()),
        OOM_EXCEPTION=torch.cuda.OutOfMemoryError,
        InterruptProcessingException=InterruptProcessingException,
        interrupt_current_processing=lambda value=True: interrupted.__setitem__(0, value),
        processing_interrupted=lambda: interrupted[0],
        throw_exception_if_processing_interrupted=throw_exception_if_processing_interrupted,
    )
    utils = _module("comfy.utils", PROGRESS_BAR_HOOK=None)

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total, self.current, self.node_id = total, 0, node_id
            calls.append(("progress", total))

        def update_absolute(self, value, total=None, preview=None):
            self.current = min(value, self.total)
            if utils.PROGRESS_BAR_HOOK is not None:
                utils.PROGRESS_BAR_HOOK(self.current, self.total, preview, node_id=self.node_id)

        def update(self, value):
            self.update_absolute(self.current + value)

    utils.ProgressBar = ProgressBar
    patcher = make_model_patcher(module_size)
    comfy = _module("comfy", model_management=mm, model_patcher=patcher, utils=utils)
    comfy.__path__ = []
    return {"comfy": comfy, "comfy.model_management": mm, "comfy.model_patcher": patcher, "comfy.utils": utils}


# --------------------------------------------------------------------------- folder_paths


def make_folder_paths(base: str) -> types.ModuleType:
    """``folder_paths`` over ``base/models``, ``base/input``, ``base/output`` and ``base/temp``."""
    fp = _module("folder_paths", models_dir=os.path.join(base, "models"), folder_names_and_paths={})
    for d in ("models", "input", "output", "temp"):
        os.makedirs(os.path.join(base, d), exist_ok=True)

    def add_model_folder_path(folder_name, full_folder_path, is_default=False):
        if folder_name in fp.folder_names_and_paths:
            paths = fp.folder_names_and_paths[folder_name][0]
            if full_folder_path not in paths:
                paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)
        else:
            fp.folder_names_and_paths[folder_name] = ([full_folder_path], set())

    def get_filename_list(folder_name):
        out = set()
        for d in fp.folder_names_and_paths[folder_name][0]:
            for root, _, files in os.walk(d):
                out.update(os.path.relpath(os.path.join(root, f), d) for f in files)
        return sorted(out)

    def get_full_path(folder_name, filename):
        filename = os.path.relpath(os.path.join("/", filename), "/")
        for d in fp.folder_names_and_paths.get(folder_name, ([], None))[0]:
            if os.path.isfile(os.path.join(d, filename)):
                return os.path.join(d, filename)
        return None

    def get_annotated_filepath(name, default_dir=None):
        for tag, d in ((" [output]", fp.get_output_directory()), (" [input]", fp.get_input_directory())):
            if name.endswith(tag):
                return os.path.join(d, name[: -len(tag)])
        return os.path.join(default_dir or fp.get_input_directory(), name)

    def get_save_image_path(filename_prefix, output_dir, image_width=0, image_height=0):
        # ComfyUI's counter rule: the highest NNNNN of files named "<prefix>_NNNNN..." plus one
        subfolder = os.path.dirname(os.path.normpath(filename_prefix))
        filename = os.path.basename(os.path.normpath(filename_prefix))
        full_output_folder = os.path.join(output_dir, subfolder)
        if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
            raise Exception("Saving image outside the output folder is not allowed.")
        counters = []
        for f in os.listdir(full_output_folder) if os.path.isdir(full_output_folder) else ():
            if f[: len(filename) + 1] == filename + "_":
                try:
                    counters.append(int(f[len(filename) + 1:].split("_")[0]))
                except ValueError:
                    counters.append(0)
        counter = max(counters, default=0) + 1
        os.makedirs(full_output_folder, exist_ok=True)
        return full_output_folder, filename, counter, subfolder, filename_prefix

    fp.__dict__.update(
        add_model_folder_path=add_model_folder_path,
        get_folder_paths=lambda folder_name: fp.folder_names_and_paths[folder_name][0][:],
        get_filename_list=get_filename_list,
        get_full_path=get_full_path,
        get_input_directory=lambda: os.path.join(base, "input"),
        get_output_directory=lambda: os.path.join(base, "output"),
        get_temp_directory=lambda: os.path.join(base, "temp"),
        get_annotated_filepath=get_annotated_filepath,
        get_save_image_path=get_save_image_path,
    )
    return fp


# --------------------------------------------------------------------------- comfy_api.latest


class _Input:
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 extra_dict=None):
        self.id, self.display_name, self.optional, self.tooltip, self.lazy = id, display_name, optional, tooltip, lazy


class _WidgetInput(_Input):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default: Any = None,
                 socketless: bool = None, widget_type: str = None, force_input: bool = None, extra_dict=None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
        self.default, self.force_input = default, force_input


class _Output:
    def __init__(self, id: str = None, display_name: str = None, tooltip: str = None, is_output_list=False):
        self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name, tooltip, is_output_list


def _comfytype(io_type: str, input_cls=_Input):
    t = type(io_type.title(), (), {"io_type": io_type})
    t.Input = type("Input", (input_cls,), {"io_type": io_type})
    t.Output = type("Output", (_Output,), {"io_type": io_type})
    return t


class _BooleanInput(_WidgetInput):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default: bool = None,
                 label_on: str = None, label_off: str = None, socketless: bool = None, force_input: bool = None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)


class _IntInput(_WidgetInput):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default: int = None,
                 min: int = None, max: int = None, step: int = None, control_after_generate: bool = None,
                 display_mode=None, socketless: bool = None, force_input: bool = None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
        self.min, self.max, self.step = min, max, step


class _FloatInput(_WidgetInput):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default: float = None,
                 min: float = None, max: float = None, step: float = None, round: float = None, display_mode=None,
                 socketless: bool = None, force_input: bool = None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
        self.min, self.max, self.step = min, max, step


class _StringInput(_WidgetInput):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, multiline=False,
                 placeholder: str = None, default: str = None, dynamic_prompts: bool = None, socketless: bool = None,
                 force_input: bool = None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
        self.multiline = multiline


class _ComboInput(_WidgetInput):
    def __init__(self, id, options=None, display_name=None, optional=False, tooltip=None, lazy=None, default=None,
                 control_after_generate=None, upload=None, image_folder=None, remote=None, socketless=None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless)
        self.options = options


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list = None
    outputs: list = None
    hidden: list = None
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False


class NodeOutput:
    def __init__(self, *args: Any, ui=None, expand: dict = None, block_execution: str = None):
        self.args, self.ui, self.expand, self.block_execution = args, ui, expand, block_execution


class ComfyNode:
    @classmethod
    @abstractmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    @abstractmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError


class _UIOutput(ABC):
    @abstractmethod
    def as_dict(self) -> dict:
        ...


class SavedResult(dict):
    def __init__(self, filename: str, subfolder: str, type: str):
        super().__init__(filename=filename, subfolder=subfolder, type=type)


class PreviewImage(_UIOutput):
    """``comfy_api.latest._ui.PreviewImage``: each image of an IMAGE batch saved as a PNG in the
    temp folder (``ImageSaveHelper.save_images``: prefix ``ComfyUI_temp_`` + 5 random letters,
    ``folder_paths.get_save_image_path``'s counter, ``<prefix>_<counter:05>_.png``, floats to
    bytes by ``clip(255 * x)``, compress level 1); ``as_dict`` is what the frontend receives."""

    folder_paths = None  # the module it saves through (None: import it when saving, as ComfyUI does)

    def __init__(self, image, animated: bool = False, cls=None, **kwargs):
        fp = self.folder_paths or importlib.import_module("folder_paths")
        prefix = "ComfyUI_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
        folder, filename, counter, subfolder, _ = fp.get_save_image_path(
            prefix, fp.get_temp_directory(), image[0].shape[1], image[0].shape[0])
        self.values = []
        for batch_number, t in enumerate(image):
            file = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
            Image.fromarray(np.clip(255.0 * t.cpu().numpy(), 0, 255).astype(np.uint8)).save(
                os.path.join(folder, file), compress_level=1)
            self.values.append(SavedResult(file, subfolder, "temp"))
            counter += 1
        self.animated = animated

    def as_dict(self) -> dict:
        return {"images": self.values, "animated": (self.animated,)}


class ComfyExtension(ABC):
    @abstractmethod
    async def get_node_list(self) -> list:
        ...


def make_comfy_api(versions=("v0_0_2", "latest"), folder_paths=None) -> dict[str, types.ModuleType]:
    """``comfy_api`` with the given API modules (``latest`` and the versioned ``v0_0_2``, which
    re-exports latest's ``io``, ``ui`` and ``ComfyExtension`` as in ComfyUI 0.3.48 to 0.3.64),
    each holding the ``io`` and ``ui`` names the nodes use; ``ui`` saves previews through
    ``folder_paths`` (None: the ``folder_paths`` module of ``sys.modules`` when it saves)."""
    io = _module(
        "comfy_api.latest.io", Schema=Schema, NodeOutput=NodeOutput, ComfyNode=ComfyNode,
        Image=_comfytype("IMAGE"), Mask=_comfytype("MASK"), Boolean=_comfytype("BOOLEAN", _BooleanInput),
        Int=_comfytype("INT", _IntInput), Float=_comfytype("FLOAT", _FloatInput),
        String=_comfytype("STRING", _StringInput), Combo=_comfytype("COMBO", _ComboInput),
        Custom=lambda io_type: _comfytype(io_type),
    )
    ui = _module("comfy_api.latest.ui", SavedResult=SavedResult,
                 PreviewImage=type("PreviewImage", (PreviewImage,), {"folder_paths": folder_paths}))
    api = _module("comfy_api")
    api.__path__ = []
    modules = {"comfy_api": api}
    for version in versions:
        m = _module(f"comfy_api.{version}", io=io, ui=ui, ComfyExtension=ComfyExtension)
        m.__path__ = []
        setattr(api, version, m)
        modules[f"comfy_api.{version}"] = m
    return modules
