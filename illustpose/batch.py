"""Running the models over many files: prefetching, batches, resumable runs and their counts.

Shared by the commands that walk collections (``caption``, ``annotate``).  A command describes
its work as a :class:`Task` (load one input, run the models on a batch, write one result's files)
and a list of jobs; :func:`run_local` runs it on this machine and
:func:`illustpose.distributed.run_on_ray` on a Ray cluster, with the same files as the result.

* :func:`prefetch` loads files in background threads (PIL decodes and resizes with the GIL
  released) while the models run, and hands them over in input order;
* :func:`batches` groups the loaded items, keeping each file's load error apart;
* :class:`RunRecord` remembers which inputs a run finished, with which weights and options, in
  a SQLite file beside the outputs, so a rerun skips them and an interrupted run of 10,000
  images goes on where it stopped; a changed input file, weight file or option redoes the work;
* :class:`Counts` is the done / skipped / failed summary and the exit status.

Nothing here knows about models or output formats: the commands pass the functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

from .errors import IllustposeError, RunRecordError

__all__ = ["Task", "Loaded", "load_or_error", "failure", "prefetch", "batches", "each_or_error", "Counts", "run_local", "RunRecord", "file_state",
           "fingerprint"]

T = TypeVar("T")


class Task(Protocol):
    """One command's work on one job (an input file and where its outputs go).

    ``load`` and ``write`` run per job (in loader threads or Ray workers: they must not share
    mutable state), ``infer`` per batch.  A task is built once per process (a Ray actor builds
    its own from a picklable factory), so loading the models belongs in its constructor.

    A task whose results go to one writer (the pose index: one SQLite file) defines
    ``collect(job, value, result)`` instead of ``write``: it returns the job's picklable output
    (e.g. index entries), which the run hands, in job order, to a ``sink(job, output) -> paths``
    it was given; on Ray the sink runs on the driver.
    """

    def key(self, job) -> str:
        """The job's identity in the run record (e.g. the input's path)."""

    def source(self, job) -> str:
        """The input file whose state the run record checks."""

    def load(self, job):
        """The job's input: the decoded image and as much per-image CPU work as the models allow
        (e.g. :meth:`illustpose.pipeline.Pipeline.prepare`), since this runs in the loader threads;
        raises ImageError / OSError for a bad file."""

    def infer(self, values: list) -> list:
        """One result per loaded value; raises an IllustposeError for an input the models refuse."""

    def write(self, job, value, result) -> list[str]:
        """Write one result's files (atomically); returns their paths."""


@dataclass(frozen=True)
class Loaded:
    """One item after loading: ``value`` on success, else ``error`` (the message to report)."""

    item: object
    value: object = None
    error: str | None = None


def load_or_error(load: Callable, item) -> Loaded:
    """``Loaded(item, load(item))``, or with the message of the ImageError / OSError it raised."""
    try:
        return Loaded(item, load(item))
    except (IllustposeError, OSError) as e:  # a bad file is reported, the run goes on
        return Loaded(item, error=str(e))


def failure(source: str, message: str) -> str:
    """A failed input's report: ``message``, led by the input's name unless it starts with it
    already (a file that cannot be read says which; a refusal from the models' input step does not)."""
    return message if message.startswith(source) else f"{source}: {message}"


def prefetch(items: Iterable[T], load: Callable[[T], object], *, workers: int = 0, ahead: int = 8) -> Iterator[Loaded]:
    """``load(item)`` for each item, in order, computed up to ``ahead`` items in advance.

    Args:
        items: the inputs (paths, jobs), consumed lazily.
        load: item -> value (e.g. :func:`illustpose.images.load_image`).  An
            :class:`~illustpose.errors.IllustposeError` or ``OSError`` it raises becomes the
            item's ``error``; anything else propagates.
        workers: background threads; 0 loads in the calling thread, when asked for.
        ahead: how many items may be loaded but not yet consumed (bounds memory).

    Yields:
        :class:`Loaded`, in the order of ``items``.
    """
    if workers <= 0:
        for item in items:
            yield load_or_error(load, item)
        return
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="illustpose-load") as pool:
        try:
            for item in items:
                pending.append(pool.submit(load_or_error, load, item))
                if len(pending) > max(ahead, workers):
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # consumer stopped early (Ctrl-C, error): drop what was not started
            for f in pending:
                f.cancel()


def batches(loaded: Iterable[Loaded], size: int) -> Iterator[tuple[list[Loaded], list[Loaded]]]:
    """Group loaded items into ``(good, failed)`` lists of at most ``size`` items in all, in order."""
    good: list[Loaded] = []
    failed: list[Loaded] = []
    for x in loaded:
        (failed if x.error is not None else good).append(x)
        if len(good) + len(failed) >= size:
            yield good, failed
            good, failed = [], []
    if good or failed:
        yield good, failed


def each_or_error(fn: Callable[[list], list], values: list) -> list:
    """``fn(values)`` (one result per value, e.g. a model over a batch); when it raises an
    :class:`~illustpose.errors.IllustposeError` (an image the models refuse), ``fn`` is run
    on each value alone so one bad image does not sink its batch: that value's entry is then
    the exception."""
    try:
        return fn(values)
    except IllustposeError as e:
        if len(values) == 1:
            return [e]
    out: list = []
    for v in values:
        try:
            out += fn([v])
        except IllustposeError as e:
            out.append(e)
    return out


@dataclass
class Counts:
    """What a run did: files done, skipped (already complete) and failed."""

    done: int = 0
    skipped: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.done + self.skipped + self.failed

    def summary(self, verb: str, of: int | None = None) -> str:
        """``captioned 8, skipped 2 (already done), failed 1 of 11 images``."""
        return (f"{verb} {self.done}, skipped {self.skipped} (already done), failed {self.failed} "
                f"of {self.total if of is None else of} images")

    @property
    def exit_status(self) -> int:
        """0 when nothing failed, else 1 (the CLI's convention)."""
        return 1 if self.failed else 0


def run_local(task: Task, jobs: Sequence, counts: Counts, *, batch_size: int = 1, workers: int = 2,
              record: "RunRecord | None" = None, report: Callable[[str], None] = print,
              progress: Callable[[int], None] = lambda n: None, sink: Callable | None = None) -> Counts:
    """Run ``task`` over ``jobs`` on this machine: loading in ``workers`` background threads,
    the models on batches of ``batch_size``, results written in input order (by ``task.write``,
    or with ``sink`` by ``sink(job, task.collect(job, value, result))``: see :class:`Task`).

    A file that cannot be loaded or that the models refuse is reported (``report("failed: ...")``)
    and counted in ``counts.failed``; the rest go on.  Each finished job is recorded in
    ``record`` at once, so Ctrl-C (KeyboardInterrupt, which propagates) loses only the batch in
    flight; ``counts`` (updated in place) then says how far the run got.

    Returns:
        ``counts``.
    """
    loaded = prefetch(jobs, task.load, workers=workers, ahead=2 * batch_size)
    for good, bad in batches(loaded, batch_size):
        for x in bad:
            report(f"failed: {failure(task.source(x.item), x.error)}")
        counts.failed += len(bad)
        results = each_or_error(task.infer, [x.value for x in good]) if good else []
        for x, result in zip(good, results):
            if isinstance(result, Exception):
                report(f"failed: {task.source(x.item)}: {result}")
                counts.failed += 1
                continue
            outputs = sink(x.item, task.collect(x.item, x.value, result)) if sink else \
                task.write(x.item, x.value, result)
            if record is not None:
                record.finish(task.key(x.item), task.source(x.item), outputs)
            counts.done += 1
        progress(len(good) + len(bad))
    return counts


def file_state(path: str | os.PathLike) -> list:
    """What identifies a file's content cheaply: ``[real path, size, mtime in ns]`` (no hashing,
    so a 2 GB weight file costs nothing); None parts when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return [os.path.realpath(path), None, None]
    return [os.path.realpath(path), st.st_size, st.st_mtime_ns]


def fingerprint(*parts) -> str:
    """A short stable hex digest of JSON-serialisable ``parts`` (weights' file states, options)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class RunRecord:
    """Which inputs a command finished, in ``FOLDER/.illustpose-runs.sqlite``.

    One row per (command, input key): the input's :func:`file_state`, the run's settings
    fingerprint (weights and options: :func:`fingerprint`), the outputs written and when.  An
    input counts as finished when its row matches the current input state and settings and every
    output it names still exists; anything else (a new or edited image, other weights or
    options, a deleted output) is done again.  Rows are committed as each input finishes, so an
    interrupted run loses at most the batch in flight.  SQLite in WAL mode: a crash never
    corrupts the record.

    Args:
        folder: where the record lives (the output folder; created).
        command: the command's name (``annotate``, ``caption``): commands keep separate rows.
        settings: the fingerprint of weights and options that change the outputs.
    """

    NAME = ".illustpose-runs.sqlite"

    def __init__(self, folder: str | os.PathLike, command: str, settings: str):
        self.path = Path(folder) / self.NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.command, self.settings = command, settings
        try:
            self._db = sqlite3.connect(self.path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS finished (command TEXT, key TEXT, input TEXT, "
                             "settings TEXT, outputs TEXT, at REAL, PRIMARY KEY (command, key))")
        except sqlite3.DatabaseError as e:
            raise RunRecordError(f"{self.path}: cannot use this run record ({e}); delete it to start the run "
                                  "afresh") from None

    def is_finished(self, key: str, source: str | os.PathLike) -> bool:
        """True when ``key`` was finished from the same input and settings and its outputs exist."""
        row = self._db.execute("SELECT input, settings, outputs FROM finished WHERE command = ? AND key = ?",
                               (self.command, key)).fetchone()
        if row is None or row[1] != self.settings or json.loads(row[0]) != file_state(source):
            return False
        return all(Path(p).exists() for p in json.loads(row[2]))

    def finish(self, key: str, source: str | os.PathLike, outputs: Sequence[str | os.PathLike]) -> None:
        """Record ``key`` as finished with ``outputs`` written (committed at once)."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO finished VALUES (?, ?, ?, ?, ?, ?)",
                             (self.command, key, json.dumps(file_state(source)), self.settings,
                              json.dumps([str(p) for p in outputs]), time.time()))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "RunRecord":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
