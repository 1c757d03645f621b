"""effnet weights list|download|verify|path|convert — the recorded checkpoints, the local cache, and
conversion of any supported checkpoint (effnet, timm, lukemelas, torchvision, Keras .h5) to an effnet-native
.safetensors file that carries its model, preprocessing and labels."""

from __future__ import annotations

import argparse
import json
from typing import Any


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
    c = ws.add_parser(
        "convert",
        help="write any supported checkpoint as effnet-native .safetensors",
        description="Convert a checkpoint to effnet-native safetensors: the file records the model, how to build "
        "it (padding, BN eps), its preprocessing and labels, so `--weights OUT` needs no other option.",
    )
    c.add_argument("input", metavar="IN", help="checkpoint: .pth/.pt/.bin/.safetensors, or Keras .h5/.weights.h5")
    c.add_argument("output", metavar="OUT.safetensors")
    c.add_argument(
        "--from",
        dest="from_format",
        default="auto",
        choices=("auto", "effnet", "timm", "lukemelas", "torchvision", "keras"),
        help="the implementation that wrote IN (default: auto, from the file name and its keys)",
    )
    c.add_argument("--model", default=None, help="model name (default: the one model whose shapes IN fits)")
    c.add_argument("--labels", default=None, metavar="FILE", help="class names, one per line (non-ImageNet heads)")
    c.add_argument("--json", action="store_true", help="print the written metadata as JSON")
    c.set_defaults(func=run_convert)


def _records(names: list[str]):
    from ..specs import VARIANTS
    from ..weights.records import default_record, get_record

    return [default_record(n) if n in VARIANTS else get_record(n) for n in names]


def run_list(args: argparse.Namespace) -> int:
    from ..errors import WeightsUnavailableError
    from ..weights.records import DEFAULT_WEIGHTS, cache_path, records_for

    rows: list[dict[str, Any]] = []
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
                "top5": r.metrics.top5 if r.metrics else None,
                "metrics": r.metrics.to_dict() if r.metrics else None,
                "other_metrics": [m.to_dict() for m in r.other_metrics],
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        mark = "*" if row["default"] else " "
        state = "cached" if row["cached"] else "not cached"
        figures = [_metric_text(m) for m in ([row["metrics"]] if row["metrics"] else []) + row["other_metrics"]]
        print(f"{mark} {row['name']:<32} {row['model']:<20} {state:<11} {'; '.join(figures)}".rstrip())
    print("(* = the model's default; top-1/top-5 % on ImageNet-1k val as published, with the source)")
    return 0


def _metric_text(m: dict) -> str:
    top5 = f" top-5 {m['top5']}" if m["top5"] is not None else ""
    source = m["source"].split(" (")[0]
    return f"top-1 {m['top1']}{top5} ({source})"


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


def run_convert(args: argparse.Namespace) -> int:

    from ..errors import EffnetError
    from ..files import read_list
    from ..weights.to_native import convert_to_native

    labels = None
    if args.labels is not None:
        try:
            text = read_list(args.labels)
        except OSError as e:
            raise EffnetError(f"cannot read --labels {args.labels}: {e.strerror}") from None
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not args.output.endswith(".safetensors"):
        from . import UsageError

        raise UsageError(f"OUT must end in .safetensors, got {args.output}")
    info = convert_to_native(args.input, args.output, from_format=args.from_format, model=args.model, labels=labels)
    if args.json:
        print(json.dumps(info.to_json(), indent=2))
    else:
        p = info.preprocess
        print(
            f"wrote {args.output}: {info.model} ({info.source}), {info.num_classes} classes, padding {info.padding}, "
            f"bn_eps {info.bn_eps}, preprocess {p.resize_size}->{p.input_size} {p.interpolation} "
            f"mean {list(p.mean)} std {list(p.std)}"
        )
    return 0
