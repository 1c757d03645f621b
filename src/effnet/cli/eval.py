"""effnet eval DATA — top-1 / top-5 accuracy on a labelled ImageNet folder, compared with the weights record.

DATA is one of: class folders named by synset (DATA/n01440764/*.JPEG); a folder of images plus
--annotations val.txt ('ILSVRC2012_val_00000001.JPEG 65' per line); a flat folder of files named
'<synset>_<anything>.<ext>'. For a fine-tuned model (--weights RUN/model.safetensors) the class folders
and annotations name its own classes. The layout is detected automatically. Preprocessing comes from the
weights record. Exit status: 0, or 1 when an image could not be read or top-1 is below --min-top1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

if TYPE_CHECKING:  # pragma: no cover
    from ..evaluate import EvalReport, Progress


def add_parser(sub: argparse._SubParsersAction) -> None:
    from . import (
        add_backend_arguments,
        add_decode_argument,
        add_device_argument,
        add_model_arguments,
        add_model_path_argument,
    )

    p = sub.add_parser(
        "eval",
        help="measure top-1 / top-5 accuracy on ImageNet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", metavar="DATA", help="dataset folder (layout detected automatically)")
    add_model_arguments(p)
    p.add_argument(
        "--annotations",
        metavar="FILE",
        default=None,
        help="labels for a folder of images: '<file name> <class index>' per line (OMZ/Caffe val.txt)",
    )
    add_backend_arguments(p)
    add_model_path_argument(p)
    add_device_argument(p)
    add_decode_argument(p)
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: %(default)s)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="image decoding threads, running ahead of the model (default: min(4, CPU count)); "
        "with --engine ray: inference actors (default: as many as fit now, growing with the cluster)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="evaluate only N images, a spread over the classes (see docs/evaluation.md)",
    )
    p.add_argument(
        "--json",
        metavar="REPORT.json",
        default=None,
        help="write the full report (per-class accuracy, confusions, failures, per-image top-5) here",
    )
    p.add_argument(
        "--report",
        metavar="DIR",
        default=None,
        help="write DIR/report.html (self-contained: figures embedded, opens offline), its figures as PNG and "
        "SVG, and DIR/report.json (pip install 'effnet[plots]')",
    )
    p.add_argument(
        "--min-top1", type=float, default=None, metavar="X", help="exit 1 when top-1 accuracy (percent) is below X"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    from .classify import add_ray_arguments

    add_ray_arguments(p, workers=False)  # --workers: inference actors with --engine ray
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    from . import UsageError

    for name in ("batch_size", "workers", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.shared_inputs and args.engine != "ray":
        raise UsageError("--shared-inputs is for --engine ray (the local eval reads its own disk)")
    if args.min_top1 is not None and not 0 <= args.min_top1 <= 100:
        raise UsageError(f"--min-top1 is a percentage between 0 and 100, got {args.min_top1}")
    if args.json is not None:
        folder = Path(args.json).parent
        if not folder.is_dir():  # found now, not after an hour of evaluation
            raise UsageError(f"--json {args.json}: folder {folder} does not exist")
        if Path(args.json).is_dir():
            raise UsageError(f"--json {args.json} is a folder; give a file name")
        from ..fileio import writable_dir

        writable_dir(folder, f"--json {args.json}")  # a read-only folder is found now, not after the work
    if args.report is not None:
        if Path(args.report).exists() and not Path(args.report).is_dir():
            raise UsageError(f"--report {args.report} exists and is not a folder")
        from ..evaluate.html import REPORT_FILE, REPORT_NAMES
        from ..fileio import check_replaceable_dir

        check_replaceable_dir(args.report, REPORT_FILE, "the --report", REPORT_NAMES)
        from ..figures import pyplot

        pyplot("effnet eval --report")  # a missing extra is found now, not after the evaluation


def _signed(x: float | None) -> str:
    return "" if x is None else f"  ({x:+.2f} vs reference)"


def _print_report(report: EvalReport, device: str = "cpu", num_classes: int = 1000) -> None:
    from ..evaluate.report import RAY_WORKERS

    ref = report.reference
    subset = f", first {report.total:,} of {report.dataset_size:,}" if report.total < report.dataset_size else ""
    on = "" if device == "cpu" else f" on {device}"
    print(f"{report.model} ({report.weights}), backend {report.backend} {report.precision}{on}")
    print(f"  data       {report.dataset} [{report.layout}{subset}]")
    print(f"  images     {report.count:,} evaluated, {report.failed:,} failed ({len(report.per_class):,} classes)")
    print(f"  top-1      {report.top1:6.2f} %  ({report.top1_correct:,}/{report.count:,}){_signed(report.delta_top1)}")
    if num_classes > 5:  # with 5 classes or fewer every image is "right" in its top 5: no figure to show
        print(
            f"  top-5      {report.top5:6.2f} %  ({report.top5_correct:,}/{report.count:,}){_signed(report.delta_top5)}"
        )
    if ref is not None:
        top5 = "n/a" if ref.top5 is None else f"{ref.top5:.2f} %"
        print(f"  reference  top-1 {ref.top1:.2f} %, top-5 {top5} on {ref.dataset} ({ref.source})")
    else:
        print("  reference  none (weights without a record)")
    print(
        f"  speed      {report.images_per_second:.1f} img/s ({report.seconds:.1f} s: "
        f"model {report.inference_seconds:.1f} s, waiting for decoding {report.decode_wait_seconds:.1f} s; "
        f"batch {report.batch_size}, "
        f"{report.workers} {report.workers_are}"
        + ("; the time includes their start-up)" if report.workers_are == RAY_WORKERS else ")")
    )
    if report.decode is not None:
        d = report.decode
        why = ", ".join(f"{k}: {v}" for k, v in d["fallback_reasons"].items())
        print(
            f"  decode     nvJPEG {d['gpu_decoded']:,}, Pillow {d['pillow_fallbacks']:,}" + (f" ({why})" if why else "")
        )
    if report.calibration is not None:
        cal = report.calibration
        print(f"  calibration ECE {cal.ece:.4f}, NLL {cal.nll:.4f}, Brier {cal.brier:.4f}")
    if report.confused:
        print("most confused (true -> predicted: images):")
        for c in report.confused[:5]:
            print(
                f"  {c.true.label.split(',')[0]} ({c.true.synset}) -> "
                f"{c.predicted.label.split(',')[0]} ({c.predicted.synset}): {c.count}"
            )


def _evaluate_on_ray(args: argparse.Namespace, dataset, source, progress):
    from ..distributed.evaluate import EvalJob, run_eval
    from .classify import ray_options

    job = EvalJob(
        dataset=dataset,
        source=source,
        limit=args.limit,
        address=args.ray_address,
        options=ray_options(args, args.batch_size, args.workers),
        shared_inputs=args.shared_inputs,
        progress=False,  # the report's own bar; Ray Data's would draw over it
    )
    return run_eval(job, progress)


def run(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate, find_dataset
    from ..source import labels_of
    from . import classifier_from_args, model_path_options, source_from_args
    from .classify_video import note_skipped_videos

    _check_args(args)
    model_path = model_path_options(args)
    # The dataset first: a wrong folder fails in a second, before the weights are fetched or the model loads.
    # Labelled with the model's own classes (from the record or a native file's header, read without fetching
    # anything): a fine-tuned run's folders and class names. A --model-path file says its own classes (and
    # they must agree with --weights): its source is resolved here, the once it is resolved.
    source = source_from_args(args, model_path) if model_path else None
    labels = source.labels if source is not None else labels_of(args.model, args.weights)
    dataset = find_dataset(args.data, annotations=args.annotations, labels=labels)
    note_skipped_videos(args.data, "eval")
    if dataset.unmatched_annotations:
        print(
            f"effnet: note: {dataset.unmatched_annotations:,} entries of {args.annotations} have no image in "
            f"{args.data}; evaluating the {len(dataset):,} images present",
            file=sys.stderr,
        )
    total = min(len(dataset), args.limit or len(dataset))
    if args.engine == "ray":
        from ..distributed import check_installed

        check_installed("effnet eval --engine ray")  # a missing extra is said before the weights are fetched
    source = source or source_from_args(args, model_path)  # once; then handed to the local or the Ray engine
    bar = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True, disable=True if args.no_progress else None)

    def progress(p: Progress) -> None:
        bar.update(p.done - bar.n)
        bar.set_postfix_str(
            f"top1 {p.top1:.2f}%"
            + (f" top5 {p.top5:.2f}%" if len(labels) > 5 else "")
            + (f" failed {p.failed}" if p.failed else ""),
            refresh=False,
        )

    if args.engine == "ray":
        with bar:
            on_ray = _evaluate_on_ray(args, dataset, source, progress)
        report, device = on_ray.report, on_ray.device  # what the actors ran on, as they reported it
    else:
        clf = classifier_from_args(args, source, model_path, workload="throughput" if total > 1 else "latency")
        device = str(getattr(clf.backend, "device", "cpu"))
        with bar:
            report = evaluate(
                clf, dataset, batch_size=args.batch_size, workers=args.workers, limit=args.limit, progress=progress
            )
    if args.json is not None:
        report.write_json(args.json)
    _print_report(report, device, len(labels))
    if args.engine == "ray":
        for node_run in on_ray.runs:  # each node's backend and device, as its actors reported them
            print(f"  on Ray     {node_run.describe()}")
    if args.report is not None:
        from ..evaluate.html import write_html_report

        print(f"  report     {write_html_report(report, args.report)}")
    status = 0
    if report.failed:
        for f in report.failures[:10]:
            print(f"effnet: could not read {f.error if f.path in f.error else f'{f.path}: {f.error}'}", file=sys.stderr)
        more = f" (all listed in {args.json})" if args.json and report.failed > 10 else ""
        print(
            f"effnet: {report.failed:,} of {report.total:,} images could not be read{more}; the accuracy above "
            f"is over the {report.count:,} that could",
            file=sys.stderr,
        )
        status = 1
    if args.min_top1 is not None and report.top1 < args.min_top1:
        print(f"effnet: top-1 {report.top1:.2f} % is below --min-top1 {args.min_top1:g}", file=sys.stderr)
        status = 1
    return status
