"""Running over collections: prefetch order and bounds, per-image failures, the run record."""

from __future__ import annotations

import threading

import pytest

from illustpose.batch import Counts, RunRecord, batches, each_or_error, fingerprint, prefetch
from illustpose.errors import ImageError, RunRecordError


def test_prefetch_keeps_order_reports_errors_and_runs_in_background():
    threads = set()

    def load(i):
        threads.add(threading.current_thread().name)
        if i == 3:
            raise ImageError(f"{i}: broken")
        return i * 10

    for workers in (0, 3):
        threads.clear()
        got = list(prefetch(range(7), load, workers=workers, ahead=2))
        assert [x.item for x in got] == list(range(7))
        assert [x.value for x in got] == [0, 10, 20, None, 40, 50, 60]
        assert got[3].error == "3: broken"
        assert all(t.startswith("illustpose-load") for t in threads) == (workers > 0)


def test_prefetch_loads_a_bounded_number_ahead():
    started = []
    gate = threading.Event()

    def load(i):
        started.append(i)
        gate.wait(5)
        return i

    it = prefetch(range(100), load, workers=2, ahead=4)
    first = threading.Thread(target=lambda: next(it))
    first.start()
    first.join(0.5)
    assert len(started) <= 5  # ahead + the one being waited for, never the whole collection
    gate.set()
    first.join(5)
    it.close()


def test_other_exceptions_propagate():
    with pytest.raises(ZeroDivisionError):
        list(prefetch([1, 0], lambda i: 1 / i, workers=2))


def test_batches_keep_failures_apart():
    items = list(prefetch(range(5), lambda i: (_ for _ in ()).throw(ImageError("bad")) if i == 1 else i))
    grouped = [([g.item for g in good], [b.item for b in bad]) for good, bad in batches(items, 2)]
    assert grouped == [([0], [1]), ([2, 3], []), ([4], [])]


def test_each_or_error_retries_one_by_one():
    def model(values):
        if -1 in values:
            raise ImageError("refused")
        return [v * 2 for v in values]

    assert each_or_error(model, [1, 2]) == [2, 4]
    out = each_or_error(model, [1, -1, 3])
    assert out[0] == 2 and isinstance(out[1], ImageError) and out[2] == 6
    assert isinstance(each_or_error(model, [-1])[0], ImageError)


def test_counts():
    c = Counts(done=8, skipped=2, failed=1)
    assert c.summary("captioned") == "captioned 8, skipped 2 (already done), failed 1 of 11 images"
    assert c.exit_status == 1 and Counts(done=1).exit_status == 0


def test_run_record_redoes_what_changed(tmp_path):
    image, out = tmp_path / "a.png", tmp_path / "out" / "a.mask.png"
    image.write_bytes(b"1")
    out.parent.mkdir()
    out.write_bytes(b"m")
    settings = fingerprint({"weights": "x"}, {"threshold": 0.5})
    with RunRecord(tmp_path / "out", "annotate", settings) as rec:
        assert not rec.is_finished("a", image)
        rec.finish("a", image, [out])
        assert rec.is_finished("a", image)
    with RunRecord(tmp_path / "out", "annotate", settings) as rec:  # a new process sees it
        assert rec.is_finished("a", image)
    with RunRecord(tmp_path / "out", "caption", settings) as rec:  # another command does not
        assert not rec.is_finished("a", image)
    with RunRecord(tmp_path / "out", "annotate", fingerprint({"weights": "y"}, {"threshold": 0.5})) as rec:
        assert not rec.is_finished("a", image)  # other weights or options
    with RunRecord(tmp_path / "out", "annotate", settings) as rec:
        image.write_bytes(b"22")  # the input changed
        assert not rec.is_finished("a", image)
        rec.finish("a", image, [out])
        out.unlink()  # an output is gone
        assert not rec.is_finished("a", image)


def test_a_damaged_run_record_is_one_clear_error(tmp_path):
    (tmp_path / RunRecord.NAME).write_bytes(b"not a database at all, just some bytes" * 50)
    with pytest.raises(RunRecordError, match="delete it to start the run afresh"):
        RunRecord(tmp_path, "annotate", "s")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "nodes"))
    from harness import write_tiny_weights

    folder = tmp_path_factory.mktemp("weights")
    write_tiny_weights(folder)
    return ["--weights-dir", str(folder), "--offline", "--quiet"]


def test_the_model_inputs_are_made_in_the_loader_threads(tiny_weights, tmp_path, monkeypatch):
    """annotate --workers 2: the segmenter's and the tagger's resizes and letterboxes run in the
    loader threads, not the models' thread, and the files equal a run without loader threads."""
    from PIL import Image

    import illustpose.models.segmenter as segmenter
    import illustpose.models.tagger as tagger
    from illustpose.cli import main

    threads = []
    for module, name in ((segmenter, "segmenter_input"), (tagger, "tagger_input")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name,
                            lambda *a, _real=real: threads.append(threading.current_thread().name) or _real(*a))
    src = tmp_path / "in"
    src.mkdir()
    for i, size in enumerate([(64, 48), (30, 90), (5, 400)]):
        Image.new("RGBA" if i == 1 else "RGB", size, (70 * i, 90, 30)).save(src / f"{i}.png")
    assert main(["annotate", str(src), "--out", str(tmp_path / "w2"), "--workers", "2", "--batch-size", "2",
                 *tiny_weights]) == 0
    assert len(threads) == 6 and all(t.startswith("illustpose-load") for t in threads)
    assert main(["annotate", str(src), "--out", str(tmp_path / "w0"), "--workers", "0", "--batch-size", "2",
                 *tiny_weights]) == 0
    files = {w: {p.relative_to(tmp_path / w).as_posix(): p.read_bytes() for p in sorted((tmp_path / w).rglob("*.*"))}
             for w in ("w2", "w0")}
    assert len(files["w2"]) == 3 * 8 and files["w2"] == files["w0"]


def test_a_failure_is_led_by_its_input_unless_the_message_starts_with_it():
    from illustpose.batch import failure

    assert failure("/x/a.png", "/x/a.png: not an image") == "/x/a.png: not an image"
    assert failure("a.png", "/x/data.png: not an image") == "a.png: /x/data.png: not an image"


def test_inputs_prepared_for_another_size_are_refused():
    import torch
    from PIL import Image

    from illustpose.models.segmenter import CharacterSegmenter, CharacterSegmenterNet
    from illustpose.models.tagger import DanbooruTagger, DanbooruTaggerNet

    image = Image.new("RGB", (80, 60), (200, 100, 50))
    seg64, seg32 = (CharacterSegmenter(CharacterSegmenterNet().eval(), size=s) for s in (64, 32))
    tag64, tag32 = (DanbooruTagger(DanbooruTaggerNet(3).eval(), ["a", "b", "c"], size=s) for s in (64, 32))
    with torch.no_grad():
        assert seg64.segment([image], [seg64.prepare(image)])[0].mask.shape == (60, 80)
        assert len(tag64.tag_inputs([tag64.prepare(image)])) == 1
        with pytest.raises(ValueError, match="does not fit this segmenter"):
            seg64.segment([image], [seg32.prepare(image)])
        with pytest.raises(ValueError, match="do not fit this tagger"):
            tag64.tag_inputs([tag32.prepare(image)])
