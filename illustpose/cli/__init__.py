"""Command line: ``python -m illustpose annotate | caption | weights | index | eval | finetune``.

One module per command (:mod:`.annotate`, :mod:`.caption`, :mod:`.weights`, :mod:`.index`, :mod:`.eval`,
:mod:`.finetune`), each
with a ``register(subparsers)``; :mod:`.pipeline` holds the weight flags (generated from the
registry) and the pipeline they build.  A command translates its arguments into library calls.
A user's mistake never shows a traceback: argument errors and library errors
(:class:`~illustpose.errors.IllustposeError`) become one line on stderr and exit status 2, and
warnings are shown as one ``warning: ...`` line.  Exit status: 0 ok, 1 some inputs failed, 2 an
error or nothing to do, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

from ..errors import IllustposeError
from . import annotate, caption, eval, finetune, index, weights

__all__ = ["main", "COMMANDS"]

#: the command modules, in the order ``--help`` lists them
COMMANDS = (annotate, caption, weights, index, eval, finetune)


#: the one-line summary ``--help`` shows (no markup: argparse prints descriptions verbatim)
DESCRIPTION = ("Character mask, Danbooru tags and COCO-17 keypoints for illustrations, and a pose index. "
               "Exit status: 0 ok, 1 some inputs failed, 2 an error or nothing to do, 130 interrupted.")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: what was wrong, and where the usage is (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = _Parser(prog="python -m illustpose", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"illustpose {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="annotate, caption, weights, index, eval or finetune (each has its own --help)")
    for command in COMMANDS:
        command.register(sub)
    return p


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """``warnings.formatwarning`` for the CLI: the message alone, never a line of source."""
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 some inputs failed, 2 error, 130 Ctrl-C)."""
    args = _parser().parse_args(argv)
    saved, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return args.func(args)
    except (IllustposeError, OSError) as e:  # OSError: an unwritable --out, a full disk...
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = saved
