"""``weights list | download | convert``: the registry's files, fetching them, converting them."""

from __future__ import annotations

import argparse

from ..registry import (DRIVE_ZIP, TASKS, KnownFile, default_weights, file_options, known_files, list_weights,
                        weights_kinds)

from .pipeline import file_arguments

__all__ = ["register", "markdown_table"]


_SOURCES = {"hf": "HF", "drive_zip": "authors' zip", "animepose": "AnimePose (by hand)"}


def markdown_table() -> str:
    """The weights table of ``weights/README.md`` (``weights list --markdown``), from the registry."""
    rows = ["| weights | task | description | file | size | sha256 | source |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for w in list_weights():
        for f in w.files:
            companions = "".join(f" + `{c}`" for c in f.companions)
            sha = f"`{f.sha256[:12]}...`" if f.sha256 else "unknown"
            rows.append(f"| {w.name} | {w.task} | {w.description} | `{f.name}`{companions} | "
                        f"{f.size_text()} | {sha} | {_SOURCES.get(f.source, f.source)} |")
    return "\n".join(rows)


def _hash_text(f: KnownFile, folders) -> str:
    """``sha256 pinned ...``, or the digest recorded at its first download here, or ``unknown``."""
    from ..weights import hash_records

    if f.sha256:
        return f"{f.sha256_text()} (pinned)"
    for d in folders:
        rec = next((r for n in f.local_names() if (r := hash_records(d).get(n))), None)
        if rec:
            return f"sha256 unknown, recorded at its first download: {rec.get('sha256', '?')[:12]}... in {d}"
    return "sha256 unknown" + (" (recorded at the first download)" if f.downloadable else "")


def _zip_line() -> str:
    """The authors' zip: its exact size and pinned sha256, and the downloaded copy's record."""
    from ..weights import zip_record

    z, rec = DRIVE_ZIP, zip_record()
    line = (f"{'(zip)':18s} {z.zip_name}  ({z.size:,} bytes, sha256 {z.sha256 or 'unknown'} (pinned, from the "
            f"Hugging Face mirror {z.hf_repo}); downloaded from the mirror, else from Google Drive)")
    if rec:
        line += (f"\n{'':18s}   downloaded copy: sha256 {rec.get('sha256')}, {rec.get('status')}, "
                 f"from {rec.get('source')}")
    return line


def _list(args) -> int:
    if args.markdown:
        print(markdown_table())
        return 0
    from ..weights import find_local, search_folders

    folders = search_folders(args.weights_dir)
    defaults = {default_weights(t.name).name: t.name for t in TASKS}
    print("Folders searched, in order (add one with --weights-dir DIR):")
    print("\n".join(f"  {d}" for d in folders))
    for kind in weights_kinds():
        used = find_local(kind, args.weights_dir)
        label = f"{kind} (the default {defaults[kind]} weights)" if kind in defaults else kind
        print(f"{label}: " + (f"uses {used}" if used else "missing"))
        if used and used.name == f"{kind}.safetensors":
            print(f"  present  {used.name} (converted)")
        for f in known_files(kind):
            at = next((d / n for d in folders for n in f.local_names() if (d / n).is_file()), None)
            print(f"  {'present' if at else 'missing'}  {f.name}  "
                  f"({f.format}, {f.source}, {f.size_text()}, {_hash_text(f, folders)})")
    print(_zip_line())
    _finetuned(folders)
    return 0


def _finetuned(folders) -> None:
    """Fine-tuned pose files in the folders, each with its record (``finetune``)."""
    from ..finetune import describe, finetune_metadata

    for d in folders:
        for f in sorted(d.glob("*.safetensors")) if d.is_dir() else ():
            record = finetune_metadata(f)
            if record:
                print(f"{f.name}: {describe(record)}\n  in {d}")


def _download(args) -> int:
    from ..weights import resolve_all

    kinds = list(dict.fromkeys(args.kinds))
    for path in resolve_all([(kind, None) for kind in kinds], search_dirs=args.weights_dir, offline=False):
        print(path)
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
    lst.add_argument("--weights-dir", metavar="DIR", action="append", default=[],
                     help="also look in this folder, before the pack's weights/ (repeatable)")
    lst.set_defaults(func=_list)
    d = w.add_parser("download", help="download weights into the first --weights-dir (or the pack's weights/)")
    d.add_argument("kinds", nargs="+", choices=weights_kinds(), metavar="KIND",
                   help=f"weights to get: {', '.join(weights_kinds())}")
    d.add_argument("--weights-dir", metavar="DIR", action="append", default=[],
                   help="download into this folder (the first one given) and look in it first (repeatable)")
    d.set_defaults(func=_download)
    c = w.add_parser("convert", help="convert a .ckpt/.pth/.safetensors to illustpose .safetensors")
    c.add_argument("src", metavar="SRC", help="the weight file to convert (.ckpt, .pth or .safetensors)")
    c.add_argument("--out", required=True, metavar="DST.safetensors", help="destination .safetensors")
    for option in file_options():
        c.add_argument(option.flag, metavar=option.metavar, help=option.help)
    c.set_defaults(func=_convert)
