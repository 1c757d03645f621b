"""effnet train DATA --output RUN — fine-tune on class folders (one sub-folder per class, any names).

Writes RUN/model.safetensors (the best epoch by validation accuracy; classes and preprocessing in its
metadata, so `effnet classify --weights RUN/model.safetensors` needs no other flag), RUN/checkpoint.pt
(every epoch; --resume continues from it) and RUN/log.jsonl (one JSON object per epoch). Under torchrun
(`torchrun --nproc-per-node N -m effnet train ...`) it trains data-parallel; --batch-size is global.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

_DEFAULT = object()


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..train.config import TrainConfig

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    p = sub.add_parser("train", help="fine-tune on your own labels (class folders)", description=__doc__)
    # Every default is a sentinel, so that --resume can tell the options given from the run's saved ones.
    p.set_defaults(func=run)

    def opt(*names: str, key: str, help: str, **kw: Any) -> None:
        shown = defaults.get(key)
        p.add_argument(*names, dest=key, default=_DEFAULT, help=f"{help} (default: {shown})", **kw)

    p.add_argument("data", nargs="?", default=_DEFAULT, metavar="DATA", help="training images: DATA/<class>/*.jpg")
    p.add_argument("--output", required=True, metavar="RUN", help="run folder for the model, checkpoint and log")
    opt("--model", key="model", help="model name")
    opt("--weights", key="weights", metavar="FILE|NAME", help="starting weights; default: the model's default record")
    opt("--epochs", key="epochs", type=int, help="epochs")
    opt("--batch-size", key="batch_size", type=int, help="global batch size; default: 32, smaller on small data")
    opt("--lr", key="lr", type=float, help="peak AdamW learning rate of the classifier")
    opt("--body-lr-scale", key="body_lr_scale", type=float, help="the body's peak rate is --lr times this")
    opt("--min-steps", key="min_steps", type=int, help="epochs are added until the run has this many steps")
    p.add_argument(
        "--no-probe", dest="probe", action="store_const", const=False, default=_DEFAULT,
        help="start from a zero classifier instead of the L-BFGS linear probe (with --freeze body: train it by SGD)",
    )  # fmt: skip
    opt(
        "--bn-stats",
        key="bn_stats",
        choices=("auto", "train", "frozen"),
        help="BN running statistics (auto: frozen below 1000 images)",
    )
    p.add_argument(
        "--no-calibrate", dest="calibrate", action="store_const", const=False, default=_DEFAULT,
        help="do not fit a softmax temperature on the validation split",
    )  # fmt: skip
    opt("--weight-decay", key="weight_decay", type=float, help="AdamW weight decay (not on BN/bias)")
    opt("--warmup-epochs", key="warmup_epochs", type=float, help="linear warmup before the cosine decay")
    opt("--label-smoothing", key="label_smoothing", type=float, help="label smoothing")
    opt("--ema-decay", key="ema_decay", type=float, help="weight EMA decay, 0 = off")
    opt("--freeze", key="freeze", metavar="none|body|stages:K", help="what not to train")
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val", dest="val", default=_DEFAULT, metavar="DIR", help="validation class folders")
    val.add_argument(
        "--val-split",
        dest="val_split",
        type=float,
        default=_DEFAULT,
        metavar="F",
        help=f"fraction of DATA held out per class for validation, 0 = none (default: {defaults['val_split']})",
    )
    opt("--seed", key="seed", type=int, help="seed of every random choice")
    opt("--drop-rate", key="drop_rate", type=float, help="head dropout; default: the model's")
    opt("--drop-path-rate", key="drop_path_rate", type=float, help="stochastic depth; default: the model's")
    opt("--min-scale", key="min_scale", type=float, help="smallest RandomResizedCrop area; default: by data size")
    p.add_argument(
        "--trivial-augment", dest="trivial_augment", action="store_const", const=True, default=_DEFAULT,
        help="add TrivialAugment to the flip and random crop",
    )  # fmt: skip
    opt("--precision", key="precision", choices=("auto", "fp32", "bf16"), help="autocast precision")
    p.add_argument(
        "--no-channels-last", dest="channels_last", action="store_const", const=False, default=_DEFAULT,
        help="keep NCHW contiguous tensors",
    )  # fmt: skip
    p.add_argument(
        "--grad-checkpointing", dest="grad_checkpointing", action="store_const", const=True, default=_DEFAULT,
        help="recompute activations in backward (less memory)",
    )  # fmt: skip
    opt("--device", key="device", help="auto, cpu, cuda or cuda:N")
    opt("--workers", key="workers", type=int, help="data loader processes")
    p.add_argument("--resume", action="store_true", help="continue RUN from its checkpoint.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")


def _model_of(weights: str) -> str:
    """The model an effnet-native file or a record name says its weights are for (else the default)."""
    from ..train import TrainConfig
    from ..weights.native import read_native_info
    from ..weights.records import find_record

    record = find_record(weights)
    if record is not None and not Path(weights).exists():
        return record.model
    info = read_native_info(weights) if Path(weights).is_file() else None
    return info.model if info is not None else TrainConfig.model


def run(args: argparse.Namespace) -> int:
    from ..train import TrainConfig, TrainError, train
    from ..train.checkpoint import load_checkpoint
    from . import UsageError
    from .classify_video import note_skipped_videos

    given = {
        f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, _DEFAULT) is not _DEFAULT
    }
    if "model" not in given and given.get("weights") and not args.resume:
        given["model"] = _model_of(given["weights"])  # the file (or record) says its model, as classify takes it
    output = Path(args.output)
    runtime = {"output": output, "resume": args.resume, "progress": not args.no_progress}
    if not args.resume and "data" not in given:
        raise UsageError("DATA (a folder of class folders) is required unless --resume")
    # With --resume: the saved run definition, the options given now on top (train() reports a change).
    base = load_checkpoint(output)["config"] if args.resume else {}
    try:
        config = TrainConfig.from_json({**base, **given}, **runtime)
    except TrainError as e:
        raise UsageError(str(e)) from None
    from ..fileio import new_output_dir

    if "data" in given:
        note_skipped_videos(given["data"], "train")
    # The run folder is proven writable before the first epoch (not when the model is saved); a failed run
    # leaves no empty folder behind.
    with new_output_dir(output, "the training run"):
        result = train(config)
    if not result.is_main:  # under torchrun only rank 0 reports
        return 0
    summary = {
        "model": str(result.output),
        "classes": list(result.classes),
        "best_epoch": result.best_epoch,
        "best_val_acc": result.best_val_acc,
        "majority_class": result.majority_class,
        "majority_acc": result.majority_acc,
        "val_images": result.val_images,
        "learned_nothing": result.learned_nothing,
        "temperature": result.calibration.temperature if result.calibration else None,
        "calibration": result.calibration.to_json() if result.calibration else None,
        "epochs": len(result.history),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        acc = ""
        if result.best_val_acc is not None and result.majority_acc is not None:
            acc = (
                f", validation accuracy {result.best_val_acc:.1%} "
                f"(majority class {result.majority_class!r}: {result.majority_acc:.1%})"
            )
        print(f"{result.output}: {len(result.classes)} classes, best epoch {result.best_epoch}{acc}")
    if result.learned_nothing:
        hint = (
            "too few images per class for a linear probe on these features"
            if given.get("freeze") == "body" or base.get("freeze") == "body"
            else "too few images or steps for the whole network (try --freeze body: the linear probe)"
        )
        print(
            f"warning: the best model is within one validation image of always answering "
            f"{result.majority_class!r} ({result.majority_acc:.1%}): it has not learned the task. Likely causes: "
            f"{hint}, or classes the pretrained features do not separate (a larger model: --model; more "
            "images per class); look at RUN/log.jsonl, RUN/curves.png and the validation images.",
            file=sys.stderr,
        )
    return 0
