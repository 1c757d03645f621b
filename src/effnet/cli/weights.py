"""effnet weights list|download|verify|path|convert|cache — the recorded checkpoints, the local cache,
conversion of any supported checkpoint (effnet, timm, lukemelas, torchvision, Keras .h5) to an effnet-native
.safetensors file that carries its model, preprocessing and labels, and the export cache (list, prune)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
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
    c.add_argument(
        "--conventions",
        default=None,
        choices=("tf", "pytorch", "lukemelas", "torchvision"),
        help="how IN was trained, when its name and sha256 do not say: tf (TF ports: SAME padding, BN eps 1e-3, "
        "resize to size + 32; Lite: mean 127 / std 128), pytorch (timm's own efficientnet_*: symmetric padding, "
        "eps 1e-5, crop 0.875), lukemelas, torchvision. Needed for timm-keyed files not named by timm",
    )
    c.add_argument("--padding", default=None, choices=("same", "symmetric"), help="override the padding")
    c.add_argument("--bn-eps", type=float, default=None, metavar="EPS", help="override the BN eps")
    c.add_argument("--mean", default=None, metavar="R,G,B", help="override the mean, 0-255 units (one or 3 values)")
    c.add_argument("--std", default=None, metavar="R,G,B", help="override the std, 0-255 units (one or 3 values)")
    c.add_argument("--json", action="store_true", help="print the written metadata as JSON")
    c.set_defaults(func=run_convert)
    cache = ws.add_parser(
        "cache",
        help="list or prune the export cache (ONNX, OpenVINO and INT8 IR of each weights file)",
        description="The export cache ($EFFNET_HOME/exports) holds one entry per weights content, model, "
        "preprocessing and export options (docs/export.md). Each fine-tuned model adds entries: list them "
        "by size and last use, and prune them by age or total size.",
    )
    cs = cache.add_subparsers(dest="cache_action", metavar="ACTION", required=True)
    cl = cs.add_parser("list", help="entries, least recently used first, with size and last use")
    cl.add_argument("--json", action="store_true", help="one JSON object: entries and total size")
    cl.set_defaults(func=run_cache_list)
    cp = cs.add_parser(
        "prune",
        help="remove entries by age or total size (always: entries with an old key and killed builds)",
    )
    cp.add_argument("--older-than", type=_duration, metavar="AGE", help="entries not used for AGE (90s, 30m, 12h, 7d)")
    cp.add_argument("--max-size", type=_size, metavar="SIZE", help="then least recently used until <= SIZE (500M, 2G)")
    cp.add_argument("--all", action="store_true", help="remove every entry")
    cp.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    cp.add_argument("--json", action="store_true")
    cp.set_defaults(func=run_cache_prune)


_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if m is None:
        raise argparse.ArgumentTypeError(f"expected a number with s, m, h, d or w (e.g. 7d), got {text!r}")
    return float(m.group(1)) * _DURATION[m.group(2) or "s"]


def _size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if m is None:
        raise argparse.ArgumentTypeError(f"expected bytes or a number with K, M, G or T (e.g. 500M), got {text!r}")
    return int(float(m.group(1)) * _SIZE[m.group(2)])


def _human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _human_age(seconds: float) -> str:
    for unit, width in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= width:
            return f"{seconds / width:.1f}{unit}"
    return f"{seconds:.0f}s"


def _print_entries(entries: list, now: float) -> None:
    for e in entries:
        weights = e.weights or "?"
        sha = f" sha256 {e.sha256[:12]}" if e.sha256 else ""
        state = "" if e.current else "  [old key: never used again]"
        print(
            f"{_human_size(e.size):>10}  used {_human_age(now - e.last_used):>6} ago  {e.kind:<13} "
            f"{e.model or '?'} {weights}{sha}  {e.path.name}{state}"
        )
        if e.checkpoint:  # every run's file is "model.safetensors": the path says which run
            print(f"{'':>10}  from {e.checkpoint}")


def run_cache_list(args: argparse.Namespace) -> int:
    from ..export.cache import exports_dir, list_entries

    entries = list_entries()
    total = sum(e.size for e in entries)
    if args.json:
        print(json.dumps({"cache": str(exports_dir()), "total_size": total, "entries": [e.to_dict() for e in entries]}))
        return 0
    _print_entries(entries, time.time())
    print(f"{len(entries)} entries, {_human_size(total)} in {exports_dir()}")
    return 0


def run_cache_prune(args: argparse.Namespace) -> int:
    from ..export.cache import exports_dir, list_entries, prune

    older_than = 0.0 if args.all else args.older_than
    failures: list[str] = []
    removed = prune(older_than=older_than, max_size=args.max_size, dry_run=args.dry_run, failures=failures)
    for failure in failures:  # said, never skipped in silence; the rest was pruned all the same
        print(f"effnet: could not remove {failure}", file=sys.stderr)
    kept = [e for e in list_entries() if all(e.path != r.path for r in removed)]
    freed = sum(e.size for e in removed)
    if args.json:
        print(
            json.dumps(
                {
                    "cache": str(exports_dir()),
                    "dry_run": args.dry_run,
                    "removed": [e.to_dict() for e in removed],
                    "freed": freed,
                    "kept_size": sum(e.size for e in kept),
                    "failures": failures,
                }
            )
        )
        return 1 if failures else 0
    _print_entries(removed, time.time())
    verb = "would remove" if args.dry_run else "removed"
    kept_size = _human_size(sum(e.size for e in kept))
    print(f"{verb} {len(removed)} entries ({_human_size(freed)}); {len(kept)} kept ({kept_size})")
    return 1 if failures else 0


def _records(names: list[str]):
    from ..specs import VARIANTS
    from ..weights.records import default_record, get_record

    return [default_record(n) if n in VARIANTS else get_record(n) for n in names]


def run_list(args: argparse.Namespace) -> int:
    from ..errors import WeightsUnavailableError
    from ..weights.download import cached_status
    from ..weights.records import DEFAULT_WEIGHTS, cache_path, records_for

    rows: list[dict[str, Any]] = []
    for r in records_for(args.model):
        try:
            path = cache_path(r)
            status, detail = cached_status(path, r.sha256, r.size)
        except WeightsUnavailableError:
            path, status, detail = None, "not cached", ""
        rows.append(
            {
                "name": r.name,
                "model": r.model,
                "default": DEFAULT_WEIGHTS.get(r.model) == r.name,
                "cached": status == "cached",
                "status": status,  # not cached, cached, partial (cut short) or corrupt
                "status_detail": detail,
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
        state = row["status"]
        figures = [_metric_text(m) for m in ([row["metrics"]] if row["metrics"] else []) + row["other_metrics"]]
        print(f"{mark} {row['name']:<32} {row['model']:<20} {state:<11} {'; '.join(figures)}".rstrip())
    print("(* = the model's default; top-1/top-5 % on ImageNet-1k val as published, with the source)")
    for row in rows:
        if row["status"] in ("partial", "corrupt"):
            print(
                f"effnet: {row['path']} is {row['status']} ({row['status_detail']}): delete it and run "
                f"`effnet weights download {row['name']}`",
                file=sys.stderr,
            )
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
    from ..weights.to_native import Overrides, convert_to_native
    from . import UsageError

    labels = None
    if args.labels is not None:
        try:
            text = read_list(args.labels)
        except OSError as e:
            raise EffnetError(f"cannot read --labels {args.labels}: {e.strerror}") from None
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not args.output.endswith(".safetensors"):
        raise UsageError(f"OUT must end in .safetensors, got {args.output}")
    given = Overrides(
        conventions=args.conventions,
        padding=args.padding,
        bn_eps=args.bn_eps,
        mean=_rgb(args.mean, "--mean"),
        std=_rgb(args.std, "--std"),
    )
    if given.bn_eps is not None and not 0 < given.bn_eps < 1:
        raise UsageError(f"--bn-eps must be between 0 and 1, got {given.bn_eps:g}")
    info = convert_to_native(
        args.input, args.output, from_format=args.from_format, model=args.model, labels=labels, given=given
    )
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


def _rgb(text: str | None, flag: str) -> tuple[float, float, float] | None:
    """``--mean``/``--std``: one value or three (R,G,B), in 0-255 pixel units as the weights records keep them."""
    from . import UsageError

    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag} takes one number or three (R,G,B), got {text!r}") from None
    if len(values) not in (1, 3):
        raise UsageError(f"{flag} takes one number or three (R,G,B), got {text!r}")
    if flag == "--std" and min(values) <= 0:
        raise UsageError(f"{flag} must be positive, got {text!r}")
    if 0 < max(abs(v) for v in values) <= 1:  # timm states them on 0-1 pixels
        raise UsageError(f"{flag} is in 0-255 pixel units, got {text!r}: multiply timm's 0-1 values by 255")
    r, g, b = values * 3 if len(values) == 1 else values
    return r, g, b
