"""``weights list | download | convert``: the registry's files, fetching them, converting them."""

from __future__ import annotations

import argparse

from ..registry import file_options, format_size, known_files, list_weights, weights_kinds

from .pipeline import file_arguments

__all__ = ["register", "markdown_table"]


def markdown_table() -> str:
    """The weights table of ``weights/README.md`` (``weights list --markdown``), from the registry."""
    rows = ["| weights | task | description | file | size | source |", "| --- | --- | --- | --- | --- | --- |"]
    for w in list_weights():
        for f in w.files:
            companions = "".join(f" + `{c}`" for c in f.companions)
            source = "HF" if f.source == "hf" else "Drive zip"
            rows.append(f"| {w.name} | {w.task} | {w.description} | `{f.name}`{companions} | "
                        f"{format_size(f.size)} | {source} |")
    return "\n".join(rows)


def _list(args) -> int:
    if args.markdown:
        print(markdown_table())
        return 0
    for f in known_files():
        print(f"{f.kind:18s} {f.name}  ({f.format}, {f.source}, {format_size(f.size)})")
    return 0


def _download(args) -> int:
    from ..weights import resolve

    for kind in args.kinds:
        print(resolve(kind, search_dirs=args.weights_dir, offline=False))
    return 0


def _convert(args) -> int:
    from ..convert import convert

    print(f"wrote {convert(args.src, args.out, **file_arguments(args))}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``weights`` command and its sub-commands."""
    w = sub.add_parser("weights", help="list, download or convert weight files").add_subparsers(
        dest="action", required=True)
    lst = w.add_parser("list", help="the known weight files")
    lst.add_argument("--markdown", action="store_true", help="the weights table of weights/README.md")
    lst.set_defaults(func=_list)
    d = w.add_parser("download", help="download weights into the first --weights-dir (or the pack's weights/)")
    d.add_argument("kinds", nargs="+", choices=weights_kinds(), metavar="KIND",
                   help=f"weights to get: {', '.join(weights_kinds())}")
    d.add_argument("--weights-dir", action="append", default=[])
    d.set_defaults(func=_download)
    c = w.add_parser("convert", help="convert a .ckpt/.pth/.safetensors to illustpose .safetensors")
    c.add_argument("src")
    c.add_argument("--out", required=True, help="destination .safetensors")
    for option in file_options():
        c.add_argument(option.flag, metavar=option.metavar, help=option.help)
    c.set_defaults(func=_convert)
