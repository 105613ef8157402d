"""Running a collection command on a Ray cluster (``--ray``): the same jobs, the same files.

The jobs become a Ray Data dataset; ``map_batches`` hands batches of them to a pool of actors,
each of which builds the command's :class:`~illustpose.batch.Task` once (so the models load once
per actor, on its GPU when ``gpus_per_actor`` > 0), then loads, infers and writes its batches with
the very functions a local run uses (:func:`illustpose.batch.run_local`).  The driver only counts
and records: it receives each job's outputs or error and writes the run record, so ``--resume``
works the same on a cluster.  Every node must see the inputs and the output folder at the same
paths (a shared or network file system).  A task with one writer (``index build``: one SQLite
file) has its actors ``collect`` each job's output instead, and the driver hands those to a
``sink`` in job order (:class:`illustpose.batch.Task`).

Ray is an optional dependency: ``pip install 'illustpose[ray]'``.
"""

from __future__ import annotations

import json
import logging
import pickle
from typing import Callable, Sequence

from .batch import Counts, each_or_error, failure, load_or_error
from .errors import UsageError

__all__ = ["run_on_ray"]


class _Actor:
    """A Ray Data actor: one task (models loaded once), run over batches of jobs.  Subclassed
    per run with the task's factory as a class attribute (pickled with the class, so Ray keeps
    no constructor arguments in its object store)."""

    factory: Callable
    collects: bool = False  # task.collect (pickled, for the driver's sink) in place of task.write

    def __init__(self):
        self.task = self.factory()

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        jobs = list(batch["job"])
        loaded = [load_or_error(self.task.load, job) for job in jobs]
        good = [x for x in loaded if x.error is None]
        results = iter(each_or_error(self.task.infer, [x.value for x in good]) if good else [])
        outputs, errors = [], []
        keys = [self.task.key(job) for job in jobs]
        sources = [self.task.source(job) for job in jobs]
        for x in loaded:
            result = next(results) if x.error is None else None
            if x.error is not None or isinstance(result, Exception):
                errors.append(failure(self.task.source(x.item), x.error) if x.error is not None
                              else f"{self.task.source(x.item)}: {result}")
                outputs.append(b"")
            elif self.collects:
                errors.append("")
                outputs.append(pickle.dumps(self.task.collect(x.item, x.value, result)))
            else:
                errors.append("")
                outputs.append(json.dumps(self.task.write(x.item, x.value, result)).encode())
        return {"n": list(batch["n"]), "key": keys, "source": sources, "error": errors,
                "outputs": np.array(outputs, dtype=object)}  # bytes kept whole (a numpy "S" array strips NULs)


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'illustpose[ray]' (or 'ray[data]')") from None
    return ray


def run_on_ray(task_factory: Callable, jobs: Sequence, counts: Counts, *, address: str | None = None,
               batch_size: int = 1, actors: int | None = None, gpus_per_actor: float = 0.0,
               cpus_per_actor: float = 1.0, record=None, report: Callable[[str], None] = print,
               progress: Callable[[int], None] = lambda n: None, sink: Callable | None = None) -> Counts:
    """Run ``jobs`` on Ray; as :func:`illustpose.batch.run_local`, but across a cluster.

    Args:
        task_factory: a picklable callable building the :class:`~illustpose.batch.Task` (e.g.
            ``functools.partial(CaptionTask, args)``); called once in each actor.
        jobs: picklable jobs.
        address: the cluster (``auto``, ``ray://host:10001``); None starts or joins a local Ray
            as ``ray.init()`` does.  An already initialised Ray is used as it is.
        actors: number of actors (model replicas); None lets Ray Data scale the pool.
        gpus_per_actor, cpus_per_actor: resources each actor reserves.
        batch_size, record, report, progress, counts: as :func:`~illustpose.batch.run_local`.
        sink: ``sink(job, output) -> paths`` run on the driver, in job order, with each job's
            ``task.collect`` output (computed on the actors); None: the actors ``write``.

    Raises:
        UsageError: Ray is not installed.
    """
    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False)
    for name in ("ray", "ray.data"):  # after init, which configures them: our own lines say what happens
        logging.getLogger(name).setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False
    if actors:
        pool = ray.data.ActorPoolStrategy(size=actors)
    else:
        slots = ray.cluster_resources().get("GPU" if gpus_per_actor else "CPU", 1)
        pool = ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, int(slots // (gpus_per_actor or cpus_per_actor))))
    dataset = ray.data.from_items([{"n": n, "job": job} for n, job in enumerate(jobs)])  # jobs travel pickled
    actor = type("IllustposeActor", (_Actor,), {"factory": staticmethod(task_factory), "collects": sink is not None})
    outputs = dataset.map_batches(actor, batch_size=batch_size, batch_format="default", compute=pool,
                                  num_gpus=gpus_per_actor or None, num_cpus=cpus_per_actor)
    if sink is not None:  # the sink gets the jobs in order (this dataset's own copy of the context)
        outputs.context.execution_options.preserve_order = True
    for row in outputs.iter_rows():
        if row["error"]:
            report(f"failed: {row['error']}")
            counts.failed += 1
        else:
            paths = sink(jobs[row["n"]], pickle.loads(row["outputs"])) if sink else json.loads(row["outputs"])
            if record is not None:
                record.finish(row["key"], row["source"], paths)
            counts.done += 1
        progress(1)
    return counts
