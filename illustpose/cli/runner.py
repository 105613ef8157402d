"""How the collection commands (``caption``, ``annotate``, ``index build --ray``) run their jobs:
here, with loader threads and batches (:func:`illustpose.batch.run_local`), or on a Ray cluster
with ``--ray`` (:func:`illustpose.distributed.run_on_ray`); the same files either way."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from .pipeline import non_negative_int, positive_int, say

__all__ = ["add_runner_arguments", "run_jobs"]


def add_runner_arguments(p: argparse.ArgumentParser, *, local: bool = True) -> None:
    """``--batch-size``, ``--workers`` and the ``--ray`` group; ``local=False`` for a command whose
    local run is not a :func:`run_jobs` run (``index build``): no ``--workers`` then, and
    ``--batch-size`` applies to ``--ray``."""
    p.add_argument("--batch-size", type=positive_int, default=1, metavar="N",
                   help="images per forward pass (default 1)" + ("" if local else "; with --ray only"))
    if local:
        p.add_argument("--workers", type=non_negative_int, default=2, metavar="N",
                       help="background threads that read, decode and resize images while the models run "
                            "(default 2; 0 does it between batches)")
    r = p.add_argument_group("Ray cluster (pip install 'illustpose[ray]')")
    r.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray: --ray alone starts a local Ray (or joins the one RAY_ADDRESS names), "
                        "--ray ray://HOST:10001 or --ray auto joins a cluster; inputs and outputs must be on a "
                        "file system every node sees")
    r.add_argument("--ray-actors", type=positive_int, default=None, metavar="N",
                   help="model replicas (Ray actors), each loading the models once (default: as many as the "
                        "cluster's CPUs or GPUs allow)")
    r.add_argument("--ray-gpus", type=float, default=0.0, metavar="G",
                   help="GPUs per actor (e.g. 1, or 0.5 to share a GPU between two actors; default 0)")
    r.add_argument("--ray-cpus", type=float, default=1.0, metavar="C", help="CPUs per actor (default 1)")


def run_jobs(args, task_factory: Callable, jobs: Sequence, counts, *, total: int, verb: str, record=None,
             sink: Callable | None = None) -> int:
    """Run ``jobs`` (a :class:`~illustpose.batch.Task` from ``task_factory()``) here or on Ray,
    report failures and the summary line, and return the exit status (0, 1, or 130 on Ctrl-C).

    ``counts`` arrives with what was skipped already; ``total`` is the number of inputs found;
    ``sink``: the task's outputs go to it, in job order, on this machine (:class:`~illustpose.batch.Task`).
    """
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="img", disable=len(jobs) < 2 or args.quiet, file=sys.stderr)
    common = dict(batch_size=args.batch_size, record=record, report=say, progress=bar.update, sink=sink)
    try:
        if not jobs:
            pass
        elif args.ray is not None:
            from ..distributed import run_on_ray

            run_on_ray(task_factory, jobs, counts, address=args.ray or None, actors=args.ray_actors,
                       gpus_per_actor=args.ray_gpus, cpus_per_actor=args.ray_cpus, **common)
        else:
            from ..batch import run_local

            run_local(task_factory(), jobs, counts, workers=args.workers, **common)
    except KeyboardInterrupt:
        bar.close()
        say(f"interrupted after {counts.total} of {total} images; the files of those are written")
        return 130
    bar.close()
    if not args.quiet:
        say(counts.summary(verb, total))
    return counts.exit_status
