"""What defines a training run: :class:`TrainConfig`, and the ``--freeze`` choices."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from torch import nn

from ..errors import EffnetError
from ..model import EfficientNet

__all__ = ["TrainError", "TrainConfig", "parse_freeze", "freeze"]

Precision = Literal["auto", "fp32", "bf16"]
BnStats = Literal["auto", "train", "frozen"]

# Below this many training images a run is "small data": BN keeps its pretrained statistics and the random
# crops keep most of the image (see auto_min_scale and resolved_bn_stats).
SMALL_DATA = 1000


class TrainError(EffnetError, ValueError):
    """A training run that cannot start or continue as asked."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are for fine-tuning a pretrained model on a small dataset."""

    data: Path
    output: Path
    model: str = "efficientnet-b5"
    weights: str | None = None  # file or record name; None: the model's default record
    epochs: int = 10
    batch_size: int | None = None  # global (split over the processes); None: auto_batch_size(images)
    lr: float = 1e-3  # peak AdamW learning rate of the classifier, after warmup
    body_lr_scale: float = 0.1  # the body's peak rate is lr * this (fine-tuning keeps pretrained features)
    min_steps: int = 50  # epochs are added until the run has at least this many optimizer steps
    probe: bool = True  # fit the new classifier by L-BFGS on frozen embeddings first (the linear probe; LP-FT)
    bn_stats: BnStats = "auto"  # BN running statistics: train, frozen, or auto (frozen below SMALL_DATA images)
    calibrate: bool = True  # fit a softmax temperature on the validation split
    weight_decay: float = 0.01  # AdamW; not applied to BN and bias terms
    warmup_epochs: float = 1.0  # linear warmup from 0, then cosine decay to 0
    label_smoothing: float = 0.1
    ema_decay: float = 0.9998  # weight EMA (0: off); warmed up as TF's num_updates: min(d, (1+n)/(10+n))
    freeze: str = "none"  # none | body | stages:K
    val: Path | None = None  # a class-folder validation set; else val_split of DATA
    val_split: float = 0.1  # 0: no validation (the last epoch is the output)
    seed: int = 0
    drop_rate: float | None = None  # head dropout; None: the variant's
    drop_path_rate: float | None = None  # stochastic depth at the last block; None: the variant's
    min_scale: float | None = None  # RandomResizedCrop area range (min_scale, 1); None: auto_min_scale(images)
    trivial_augment: bool = False
    precision: Precision = "auto"  # auto: bf16 autocast on a CUDA device that has it, else fp32
    channels_last: bool = True
    grad_checkpointing: bool = False
    # Not part of the run's definition (may differ on --resume):
    device: str = "auto"
    workers: int = 2
    resume: bool = False
    progress: bool = True

    RUNTIME = ("device", "workers", "resume", "progress", "output")

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size is None or self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.body_lr_scale >= 0, f"--body-lr-scale must be >= 0, got {self.body_lr_scale}"),
            (self.min_steps >= 0, f"--min-steps must be >= 0, got {self.min_steps}"),
            (
                self.bn_stats in ("auto", "train", "frozen"),
                f"--bn-stats must be auto, train or frozen: {self.bn_stats}",
            ),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (0.0 <= self.val_split < 1.0, f"--val-split must be in [0, 1), got {self.val_split}"),
            (0.0 <= self.ema_decay < 1.0, f"--ema-decay must be in [0, 1), got {self.ema_decay}"),
            (
                self.min_scale is None or 0.0 < self.min_scale <= 1.0,
                f"--min-scale must be in (0, 1], got {self.min_scale}",
            ),
            (self.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {self.warmup_epochs}"),
            (self.workers >= 0, f"--workers must be >= 0, got {self.workers}"),
            (self.precision in ("auto", "fp32", "bf16"), f"--precision must be auto, fp32 or bf16: {self.precision}"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainError(message)
        parse_freeze(self.freeze)

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    def defining(self) -> dict[str, Any]:
        """The fields that must match for ``--resume`` to continue the same run."""
        return {k: v for k, v in self.to_json().items() if k not in self.RUNTIME}

    @classmethod
    def from_json(cls, obj: dict[str, Any], **overrides: Any) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in obj.items() if k in names}
        values.update(overrides)
        for key in ("data", "output", "val"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return cls(**values)


def auto_batch_size(images: int, world: int = 1) -> int:
    """The default global batch: 32 (timm's and Keras' fine-tuning examples), but at least 8 steps per epoch
    on a small folder (80 images: batch 10), never under 8 images, rounded up to a multiple of ``world``."""
    batch = max(8, min(32, images // 8))
    return -(-batch // world) * world


def auto_min_scale(images: int) -> float:
    """RandomResizedCrop's smallest area fraction. 0.08 is the ImageNet-from-scratch choice (Szegedy et al.
    2015, torchvision's default), which crops to 8 % of a photo: on a few hundred images the label is often
    no longer in the crop. Below 10,000 images the crop keeps at least 35 % (measured on the animal/object
    task, docs/training.md; BiT's small-data recipe, Kolesnikov et al. 2020, also crops mildly)."""
    return 0.08 if images >= 10_000 else 0.35


_STAGES = re.compile(r"stages:(\d+)")


def parse_freeze(spec: str) -> int | None:
    """How many stages ``spec`` freezes: ``none`` 0, ``stages:K`` K, ``body`` None (everything but the classifier)."""
    if spec == "none":
        return 0
    if spec == "body":
        return None
    m = _STAGES.fullmatch(spec)
    if m is None:
        raise TrainError(
            f"--freeze must be none, body or stages:K (the stem and the first K stages are frozen), got {spec!r}"
        )
    return int(m.group(1))


def freeze(model: EfficientNet, spec: str) -> list[nn.Module]:
    """Stop gradients into the frozen part of ``model`` (an EfficientNet) and return its modules.

    ``stages:K`` freezes the stem and the first K stages, ``body`` everything but the classifier.
    The caller keeps the returned modules in eval mode while training, so their BN statistics stay
    the pretrained ones and stochastic depth is off in them: a frozen part is a fixed function.
    """
    k = parse_freeze(spec)
    stages = list(model.stages)
    if k is not None and k > len(stages):
        cut = (
            ""
            if model.embedding_stage is None
            else f" (it ends at stage {model.embedding_stage}, where the probe cut it)"
        )
        raise TrainError(f"--freeze stages:{k}: the model has only {len(stages)} stages{cut}")
    frozen: list[nn.Module]
    if k is None:
        frozen = [model.stem, model.stages, model.head]
    elif k == 0:
        frozen = []
    else:
        frozen = [model.stem, *stages[:k]]
    for m in frozen:
        m.requires_grad_(False)
    return frozen
