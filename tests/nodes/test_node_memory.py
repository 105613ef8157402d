"""ComfyUI's memory manager and Cancel: loaded models are ComfyUI's to unload (its pressure logic and
``POST /free``), Cancel stops inside an image, and an out-of-memory image is tried again after
ComfyUI unloads the other models."""

from __future__ import annotations

import gc
import shutil
import time
import weakref

import pytest
import torch

H, W = 24, 32


@pytest.fixture
def mm(pack):
    return pack.modules["comfy.model_management"]


def tag(pack, image, tagger):
    return pack.run("DanbooruTag|illustpose", image=image, tagger=tagger, threshold=0.0, exclude_tags="",
                    replace_underscores=True, sort_by_score=True, max_tags=0)


def segment(pack, image, segmenter):
    return pack.run("CharacterSegment|illustpose", image=image, segmenter=segmenter, threshold=0.5,
                    cutout_background="white")


def patcher_of(pack, detector):
    return pack.module.nodes._common.model_patcher(detector)


def managed(mm) -> list:
    """The networks ComfyUI counts as loaded."""
    return [p.model for p in mm.loaded_models()]


@pytest.fixture
def fresh_copy(pack, comfy_base):
    """Load a detector from a copy of the tiny weights, held by nothing but the caller (the
    session's detectors are held for the other tests); the copies go when the test ends."""
    folder = comfy_base / "models" / "illustpose" / "copies"
    folder.mkdir(exist_ok=True)

    def load(kind: str, name: str):
        src = {"segmenter": "segmenter.safetensors", "tagger": "tagger.safetensors"}[kind]
        shutil.copy(comfy_base / "models" / "illustpose" / src, folder / name)
        return pack.load(kind, f"copies/{name}")

    yield load
    shutil.rmtree(folder)


def test_a_node_loads_its_model_through_comfyuis_memory_manager(pack, mm):
    tagger = pack.load("tagger")
    tag(pack, torch.rand(1, H, W, 3), tagger)
    patcher = patcher_of(pack, tagger)
    assert ("load_models_gpu", ("DanbooruTaggerNet",), 1 << 30, True) in pack.calls  # whole, with room to run
    assert tagger.net in managed(mm) and patcher.loaded_size() == patcher.model_size() > 0
    assert patcher.load_device == mm.get_torch_device() and patcher.offload_device == mm.unet_offload_device()


def test_comfyuis_pressure_unloads_the_model_and_the_next_run_loads_it_again(pack, mm):
    tagger = pack.load("tagger")
    image = torch.rand(2, H, W, 3, generator=torch.Generator().manual_seed(1))
    (before, _), _ = tag(pack, image, tagger)
    mm.free_memory(10 << 30, mm.get_torch_device())  # another model (an SDXL checkpoint, say) needs the memory
    assert tagger.net not in managed(mm) and patcher_of(pack, tagger).loaded_size() == 0
    pack.calls.clear()
    (after, _), _ = tag(pack, image, tagger)
    assert after == before and pack.calls[0][0] == "load_models_gpu" and tagger.net in managed(mm)


def test_free_releases_at_least_the_weights(pack, mm, fresh_copy):
    """POST /free {"unload_models": true, "free_memory": true}: ComfyUI unloads every model, then
    drops its node cache (the loaders' outputs); nothing of the pack may keep the weights alive."""
    outputs = {"segmenter": fresh_copy("segmenter", "seg_free.safetensors"),
               "tagger": fresh_copy("tagger", "tag_free.safetensors")}  # as ComfyUI's node cache holds them
    segment(pack, torch.rand(1, H, W, 3), outputs["segmenter"])
    tag(pack, torch.rand(1, H, W, 3), outputs["tagger"])
    nets = [weakref.ref(d.net) for d in outputs.values()]
    sizes = [patcher_of(pack, d).model_size() for d in outputs.values()]
    assert all(n() in managed(mm) for n in nets) and sum(sizes) > 300e6  # DeepLabv3-ResNet101 + ResNet-50

    mm.unload_all_models()  # "unload_models"
    assert not any(n() in managed(mm) for n in nets)
    outputs.clear()  # "free_memory": ComfyUI's executor resets its caches
    gc.collect()
    freed = sum(size for size, n in zip(sizes, nets) if n() is None)  # networks gone with all their tensors
    assert freed == sum(sizes)


def test_cancel_stops_inside_an_image(pack, mm):
    """The user presses Cancel while the tagger runs its first layer of a single image: the next
    layer raises ComfyUI's exception, so a long image stops at once instead of at its end."""
    tagger = pack.load("tagger")
    layers = list(tagger.net.modules())
    ran = []
    first = layers[1].register_forward_pre_hook(lambda *_: mm.interrupt_current_processing())
    counts = [m.register_forward_pre_hook(lambda *_: ran.append(1)) for m in layers]
    start = time.perf_counter()
    try:
        with pytest.raises(mm.InterruptProcessingException):
            tag(pack, torch.rand(1, H, W, 3), tagger)
    finally:
        for h in [first, *counts]:
            h.remove()
    assert len(ran) <= 3 and len(layers) > 100  # stopped within a layer or two of the press
    assert time.perf_counter() - start < 10  # generous
    assert not mm.processing_interrupted()  # ComfyUI's flag is consumed by the exception, as core does
    assert all(not m._forward_pre_hooks for m in layers)  # the checks are gone after the node
    (captions, _), _ = tag(pack, torch.rand(1, H, W, 3), tagger)  # and the next run is normal
    assert len(captions) == 1


def test_cancel_between_the_models_of_an_image(pack, mm):
    """Segment then pose in one image: Cancel during segmentation stops before the pose model runs."""
    segmenter, pose_model = pack.load("segmenter"), pack.load("pose")
    pose_runs = []
    hooks = [segmenter.net.register_forward_hook(lambda *_: mm.interrupt_current_processing()),
             pose_model.net.register_forward_hook(lambda *_: pose_runs.append(1))]
    try:
        with pytest.raises(mm.InterruptProcessingException):
            pack.run("IllustratedPose|illustpose", image=torch.rand(1, H, W, 3), pose_model=pose_model,
                     segmenter=segmenter, **pack.defaults("IllustratedPose|illustpose"))
    finally:
        for h in hooks:
            h.remove()
    assert pose_runs == []


def test_out_of_memory_is_tried_again_after_unloading_the_other_models(pack, mm, monkeypatch):
    tagger = pack.load("tagger")
    real, failures = tagger.tag, [1]

    def tag_once_out_of_memory(images, *a, **k):
        if failures:
            failures.pop()
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(images, *a, **k)

    monkeypatch.setattr(tagger, "tag", tag_once_out_of_memory)
    image = torch.rand(2, H, W, 3, generator=torch.Generator().manual_seed(2))
    (captions, _), _ = tag(pack, image, tagger)
    monkeypatch.undo()
    assert captions == tag(pack, image, tagger)[0][0]  # the retried image got its caption
    freed = pack.calls.index(("free_memory", 1e30))
    assert pack.calls[freed + 2][0] == "load_models_gpu"  # everything unloaded, the tagger loaded again


def test_out_of_memory_twice_is_a_clear_error(pack, monkeypatch):
    tagger = pack.load("tagger")

    def always(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(tagger, "tag", always)
    with pytest.raises(pack.node_error, match=r"Danbooru Tag: out of memory on cpu for image 0 \(0-based\) even "
                                              r"with every other model unloaded .*--cpu"):
        tag(pack, torch.rand(1, H, W, 3), tagger)
