"""effnet audit DATA — wrong labels, duplicates, leakage and outliers in class folders (DATA/<class>/*.jpg).

Reads DATA (and --val) only. Likely wrong labels come from the out-of-sample probabilities of a
cross-validated linear probe on the embedding `effnet train`'s probe would choose, ranked by cleanlab;
near-duplicates from embedding similarity (faiss); see docs/audit.md. Needs `pip install 'effnet[audit]'`.
With --engine ray the embedding pass runs on a Ray cluster (`effnet[ray]`); the checks stay here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..audit.embed import EmbedEngine


def shown(text: str) -> str:
    """``text`` for one terminal line: control characters (a newline in a file or class name) escaped as
    Python writes them, so a name cannot split or forge lines."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def add_parser(sub: argparse._SubParsersAction) -> None:
    from . import add_model_arguments

    p = sub.add_parser("audit", help="find wrong labels, duplicates, leakage and outliers in class folders",
                       description=__doc__)  # fmt: skip
    p.add_argument("data", metavar="DATA", help="class folders: DATA/<class>/*.jpg (as effnet train reads them)")
    p.add_argument("--val", metavar="DIR", help="validation class folders: report images that leak into them")
    add_model_arguments(p)
    p.add_argument("--json", metavar="FILE", help="write the full result as JSON ('-': to stdout)")
    p.add_argument("--report", metavar="DIR", help="write DIR/audit.html (self-contained, with thumbnails)")
    p.add_argument(
        "--write-relabel", metavar="FILE", help="write a CSV of path, given, suggested, score ('-': to stdout)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    p.add_argument(
        "--workers",
        default=None,
        metavar="N",
        help="decoding threads (default: cores, at most 4); with --engine ray: embedding actors, N or MIN:MAX "
        "(default: as many as fit now)",
    )
    p.add_argument("--no-cache", action="store_true", help="embed every image again (no embedding cache)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds (default: 0)")
    from .classify import add_ray_arguments

    add_ray_arguments(p, workers=False)  # the embedding pass only: what the cache lacks, on Ray
    p.set_defaults(func=run)


def embed_engine(args: argparse.Namespace) -> tuple[EmbedEngine | None, int | None]:
    """(the engine of the embedding pass (None: this process), its decoding threads), the flags checked."""
    from . import UsageError
    from .classify import ray_workers

    if args.engine != "ray":
        given = [flag for flag, on in (("--ray-address", args.ray_address is not None),
                 ("--shared-inputs", args.shared_inputs), ("--cpus-per-worker", args.cpus_per_worker is not None),
                 ("--gpus-per-worker", args.gpus_per_worker != 0.0)) if on]  # fmt: skip
        if given:
            raise UsageError(f"{', '.join(given)}: for --engine ray (the embedding pass on a Ray cluster)")
        try:
            workers = None if args.workers is None else int(args.workers)
        except ValueError:
            raise UsageError(f"--workers is a number of decoding threads, got {args.workers!r}") from None
        return None, workers
    from ..distributed import check_installed

    check_installed("effnet audit --engine ray")
    from ..distributed.embed import RayEmbedding

    engine = RayEmbedding(
        address=args.ray_address,
        shared_inputs=args.shared_inputs,
        batch_size=args.batch_size,
        workers=ray_workers(args.workers),
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
    )
    engine.options()  # a bad --workers or --gpus-per-worker: one line now, before any image is read
    return engine, None


def run(args: argparse.Namespace) -> int:
    from ..audit import audit
    from ..audit.outputs import check_destinations, relabel_csv_text, write_audit_page, write_relabel_csv
    from ..errors import EffnetError

    if args.json == "-" and args.write_relabel == "-":
        raise EffnetError("--json - and --write-relabel - would both write to stdout: give one of them a file")
    json_file = None if args.json in (None, "-") else args.json
    relabel_file = None if args.write_relabel in (None, "-") else args.write_relabel
    engine, workers = embed_engine(args)
    with contextlib.ExitStack() as stack:
        check_destinations(args.report, [json_file, relabel_file], [args.data, args.val], stack)
        report = audit(
            args.data,
            args.val,
            model=args.model,
            weights=args.weights,
            batch_size=args.batch_size,
            workers=workers,
            cache=not args.no_cache,
            seed=args.seed,
            progress=not args.no_progress,
            engine=engine,
        )
        if json_file:
            report.write_json(json_file)
        if relabel_file:
            write_relabel_csv(report, relabel_file)
        if args.report:
            write_audit_page(report, args.report)
    if args.json == "-":
        print(json.dumps(report.to_json()))
        return 0
    if args.write_relabel == "-":
        sys.stdout.write(relabel_csv_text(report))
        return 0
    classes = ", ".join(f"{shown(c)} {v['images']}" for c, v in report.classes.items())
    print(f"{report.images} images in {len(report.classes)} classes ({classes})")
    check = report.label_check
    if not check["ran"]:
        print(f"likely wrong labels: not checked ({shown(check['reason'])})")
    else:
        print(f"labels checked on the {report.label_embedding} embedding: cross-validated accuracy "
              f"{check['cv_accuracy']:.1%}, majority baseline {check['majority_baseline']:.1%}")  # fmt: skip
        if check["reliable"]:
            print(f"likely wrong labels: {len(report.label_issues)}")
        else:
            print(f"likely wrong labels: {len(report.label_issues)}, UNRELIABLE: the probe did not learn these "
                  "classes well (it needs >= 80 % and halfway from the majority baseline to 100 %), so it "
                  "disagrees with labels for its own sake")  # fmt: skip
        for row in report.label_issues[:10]:
            print(f"  {row['score']:.2f}  {shown(row['path'])}: {shown(row['given'])} -> {shown(row['suggested'])}")
    exact = sum(d["exact"] for d in report.duplicates)
    if report.near_duplicate_check["ran"]:
        print(f"duplicate groups: {len(report.duplicates)} ({exact} exact; near-duplicates on the "
              f"{report.duplicate_embedding} embedding)")  # fmt: skip
    else:
        why = shown(report.near_duplicate_check["reason"])
        print(f"duplicate groups: {exact} exact; near-duplicates not checked: {why}")
    if args.val:
        print(f"leakage into {shown(args.val)}: {len(report.leakage)}"
              + ("" if report.near_duplicate_check["ran"] else " (identical files only)"))  # fmt: skip
    print(f"outliers: {len(report.outliers)}, unreadable: {len(report.unreadable)}, tiny: {len(report.tiny)}")
    if report.imbalance is not None and report.imbalance > 10:
        print(f"class imbalance: the largest class has {report.imbalance:.1f}x the images of the smallest")
    return 0
