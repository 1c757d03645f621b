"""effnet weights list|download|verify|path — the recorded checkpoints and the local cache."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    from . import add_offline_argument

    p = sub.add_parser("weights", help="list, download, verify or locate pretrained weights", description=__doc__)
    ws = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = ws.add_parser("list", help="recorded checkpoints and whether they are cached")
    ls.add_argument("--model", default=None, help="only this model's weights")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)
    for action, helptext, func in (
        ("download", "download (and verify) into the cache", run_download),
        ("verify", "check size and sha256 of the cached file", run_verify),
        ("path", "print where the file is (or would be) cached", run_path),
    ):
        a = ws.add_parser(action, help=helptext)
        a.add_argument("names", nargs="+", metavar="NAME", help="weights record name or model name")
        if action == "download":
            add_offline_argument(a)
        a.set_defaults(func=func)


def _records(names: list[str]):
    from ..specs import VARIANTS
    from ..weights.records import default_record, get_record

    return [default_record(n) if n in VARIANTS else get_record(n) for n in names]


def run_list(args: argparse.Namespace) -> int:
    from ..errors import WeightsUnavailableError
    from ..weights.records import DEFAULT_WEIGHTS, cache_path, records_for

    rows = []
    for r in records_for(args.model):
        try:
            path = cache_path(r)
            cached = path.exists()
        except WeightsUnavailableError:
            path, cached = None, False
        rows.append(
            {
                "name": r.name,
                "model": r.model,
                "default": DEFAULT_WEIGHTS.get(r.model) == r.name,
                "cached": cached,
                "path": str(path) if path else None,
                "size": r.size,
                "top1": r.metrics.top1 if r.metrics else None,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        mark = "*" if row["default"] else " "
        state = "cached" if row["cached"] else "not cached"
        top1 = f"top-1 {row['top1']}" if row["top1"] else ""
        print(f"{mark} {row['name']:<32} {row['model']:<20} {state:<11} {top1}")
    print("(* = the model's default)")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from ..weights.records import fetch

    for r in _records(args.names):
        print(fetch(r))
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from ..weights.records import fetch

    for r in _records(args.names):
        path = fetch(r, download=False)
        print(f"ok {r.name} {path}")
    return 0


def run_path(args: argparse.Namespace) -> int:
    from ..weights.records import cache_path

    for r in _records(args.names):
        print(cache_path(r))
    return 0
