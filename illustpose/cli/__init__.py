"""Command line: ``python -m illustpose annotate | weights | index | eval``.

One module per command (:mod:`.annotate`, :mod:`.weights`, :mod:`.index`, :mod:`.eval`), each
with a ``register(subparsers)``; :mod:`.pipeline` holds the weight flags (generated from the
registry) and the pipeline they build.  A command translates its arguments into library calls;
library errors (:class:`~illustpose.errors.IllustposeError`) become one line on stderr and exit
status 2.  Exit status: 0 ok, 1 some inputs failed, 2 an error or nothing to do, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..errors import IllustposeError
from . import annotate, eval, index, weights

__all__ = ["main", "COMMANDS"]

#: the command modules, in the order ``--help`` lists them
COMMANDS = (annotate, weights, index, eval)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m illustpose", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 some inputs failed, 2 error)."""
    args = _parser().parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        print("--batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except IllustposeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
