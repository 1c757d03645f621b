"""The no-gradient passes of a run over a folder: the data loaders, embedding the training images for the
linear probe and choosing which embedding it reads (:mod:`effnet.train.probe`), and validation."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..evaluate.datasets import Sample
from ..model import EfficientNet
from .config import TrainConfig
from .data import Augment, Collate, GlobalBatchSampler, ImageDataset
from .distributed import World, all_gather_cat
from .probe import ProbeFit, select_embedding

__all__ = [
    "PROBE_STAGES",
    "make_loader",
    "device_batches",
    "probe_taps",
    "embedding_name",
    "probe_on",
    "embed_samples",
    "check_data",
    "Validation",
    "validate",
]

# The linear probe's candidate embeddings besides the head convolution's: the outputs of the last this many
# stages (for the B0 stage table, the stride-16 and stride-32 stages), see effnet.train.probe.
PROBE_STAGES = 4


def make_loader(dataset: ImageDataset, batch: int, world: World, cfg: TrainConfig, shuffle: bool) -> Any:
    if shuffle:  # each rank's share of each global batch, nothing repeated (GlobalBatchSampler)
        sampler = GlobalBatchSampler(len(dataset), batch, world.size, world.rank, cfg.seed)
        return torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, num_workers=cfg.workers, collate_fn=Collate(dataset.preprocess)
        )
    # validation and embeddings: every image once, split over the ranks without padding
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=max(1, batch // world.size),
        sampler=list(range(world.rank, len(dataset), world.size)),
        num_workers=cfg.workers,
        collate_fn=Collate(dataset.preprocess),
    )


def device_batches(
    loader: Any, device: torch.device, channels_last: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for x, y in loader:
        yield x.to(device, non_blocking=True, memory_format=fmt), y.to(device, non_blocking=True)


def probe_taps(net: EfficientNet) -> tuple[list[int | None], list[int]]:
    """The probe's candidate embeddings of ``net`` and their widths: the head convolution's first (kept on
    equal scores), then the outputs of the last ``PROBE_STAGES`` stages, deepest first."""
    last = len(net.stages)
    taps: list[int | None] = [None, *range(last - 1, max(-1, last - 1 - PROBE_STAGES), -1)]
    return taps, [net.num_features if t is None else net.plan.stage_channels[t] for t in taps]


def embedding_name(stage: int | None) -> str:
    return "head" if stage is None else f"stage {stage}"


def probe_on(embedded: tuple[dict[int | None, torch.Tensor], torch.Tensor], num_classes: int, seed: int) -> ProbeFit:
    """The linear probe on the best of the embedded candidates: L-BFGS logistic regression
    (:mod:`effnet.train.probe`) on the embeddings of :func:`embed_samples`."""
    candidates, y_all = embedded
    return select_embedding({t: [x] for t, x in candidates.items()}, y_all, num_classes, seed=seed)


@torch.no_grad()
def embed_samples(
    net: EfficientNet,
    samples: Sequence[Sample],
    preprocess: Any,
    world: World,
    device: torch.device,
    cfg: TrainConfig,
    batch: int,
    only: Sequence[int | None] | None = None,
) -> tuple[dict[int | None, torch.Tensor], torch.Tensor]:
    """The probe's candidate embeddings (or ``only`` these taps) of every sample, gathered from the ranks in
    the samples' order, and their labels."""
    dataset = ImageDataset(samples, preprocess, train=False, augment=Augment(), seed=cfg.seed)
    loader = make_loader(dataset, batch, world, cfg, False)
    was = net.training
    net.eval()
    taps, widths = probe_taps(net)
    if only is not None:
        widths = [w for t, w in zip(taps, widths, strict=True) if t in only]
        taps = [t for t in taps if t in only]
    parts, labels = [], []
    for x, y in device_batches(loader, device, cfg.channels_last):
        parts.append(torch.cat(net.pooled_embeddings(x, taps), dim=1).float().cpu())
        labels.append(y.cpu())
    net.train(was)
    mine = torch.cat(parts) if parts else torch.zeros(0, sum(widths))
    mine_y = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
    # rank r holds images r, r + world, ...: gather, then restore the dataset order on every rank.
    order = all_gather_cat(torch.arange(world.rank, len(samples), world.size), world)
    x_all, y_all = all_gather_cat(mine, world), all_gather_cat(mine_y, world)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    x_all, y_all = x_all[inverse], y_all[inverse]
    return dict(zip(taps, x_all.split(widths, dim=1), strict=True)), y_all


def check_data(
    net: EfficientNet,
    embedded: tuple[dict[int | None, torch.Tensor], torch.Tensor],
    fit: ProbeFit,
    val_samples: Sequence[Sample],
    preprocess: Any,
    world: World,
    device: torch.device,
    cfg: TrainConfig,
    batch: int,
    num_classes: int,
) -> None:
    """Say (rank 0, stderr) when the probe's embeddings show likely label errors or train/val leakage
    (:func:`effnet.train.datacheck.train_data_lines`); the validation images' head embedding is one extra
    forward pass over the validation split, on every rank (it gathers)."""
    from .datacheck import train_data_lines

    candidates, y = embedded
    val_head = None
    if val_samples:
        val_head = embed_samples(net, val_samples, preprocess, world, device, cfg, batch, only=[None])[0][None]
    if world.is_main and cfg.progress:
        for line in train_data_lines(
            candidates[fit.embedding_stage], y, num_classes, fit.l2, cfg.seed, candidates[None], val_head
        ):
            tqdm.write(line, file=sys.stderr)


@dataclass(frozen=True)
class Validation:
    loss: float  # the training criterion (label smoothing included), per image
    nll: float  # plain cross-entropy, per image
    acc: float
    logits: torch.Tensor  # every validation image's, gathered from all ranks (for calibration)
    labels: torch.Tensor


@torch.no_grad()
def validate(
    model: nn.Module, loader: Any, device: torch.device, cfg: TrainConfig, bf16: bool, world: World
) -> Validation:
    model.eval()
    outs, ys = [], []
    for x, y in device_batches(loader, device, cfg.channels_last):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            outs.append(model(x).float().cpu())
        ys.append(y.cpu())
    logits = all_gather_cat(torch.cat(outs) if outs else torch.zeros(0, 0), world)
    labels = all_gather_cat(torch.cat(ys) if ys else torch.zeros(0, dtype=torch.int64), world)
    smoothed = nn.functional.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
    return Validation(
        loss=float(smoothed),
        nll=float(nn.functional.cross_entropy(logits, labels)),
        acc=float((logits.argmax(1) == labels).double().mean()),
        logits=logits,
        labels=labels,
    )
