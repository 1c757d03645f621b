"""``train(config)``: fine-tune an EfficientNet on class folders and write an effnet-native model.

AdamW (no weight decay on BN and bias terms), linear warmup then cosine decay per step, label
smoothing, a weight EMA (params and BN statistics, as TF's EfficientNet training averages both),
bf16 autocast on devices that have it, channels_last. Each epoch: train, validate (the EMA weights
when the EMA is on), write ``RUN/model.safetensors`` when validation accuracy is the best so far,
then ``RUN/checkpoint.pt`` and ``RUN/log.jsonl``, each atomically. Everything random in an epoch is
seeded from (seed, epoch): ``--resume`` from a checkpoint gives the weights of an uninterrupted run.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..evaluate.datasets import find_class_folders
from ..source import resolve_source, weights_label
from ..weights.native import NativeInfo, save_native
from .checkpoint import CHECKPOINT, MODEL, load_checkpoint, save_checkpoint, write_log
from .config import TrainConfig, TrainError, freeze
from .data import Augment, Collate, ImageDataset, split_samples
from .distributed import World, all_reduce_sum, setup, teardown

__all__ = ["TrainResult", "train", "lr_at"]

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrainResult:
    output: Path  # RUN/model.safetensors
    classes: tuple[str, ...]
    best_epoch: int
    best_val_acc: float | None
    history: tuple[dict[str, Any], ...]
    is_main: bool = True  # rank 0 (the process that wrote the files) or a single process


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup over ``warmup`` steps from 0, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TrainError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"--device {name}: no CUDA device is available")
    return device


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # BN weights/biases and conv/linear biases
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, m in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if e.is_floating_point():
            e.mul_(decay).add_(m.detach(), alpha=1.0 - decay)
        else:
            e.copy_(m)


def _loader(
    dataset: ImageDataset, batch: int, world: World, cfg: TrainConfig, shuffle: bool
) -> torch.utils.data.DataLoader:
    # One sampler for one process and for many: DistributedSampler's permutation is seeded by
    # (seed + epoch), and rank r takes every world-th index, so the union of the ranks' k-th batches
    # is the single-process k-th batch of the same global size.
    if shuffle:
        sampler: Any = torch.utils.data.DistributedSampler(
            dataset, num_replicas=world.size, rank=world.rank, shuffle=True, seed=cfg.seed
        )
    else:  # validation: every image once, split over the ranks without padding
        sampler = list(range(world.rank, len(dataset), world.size))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=cfg.workers,
        collate_fn=Collate(dataset.preprocess),
        generator=torch.Generator().manual_seed(cfg.seed),  # leave the global RNG alone
    )


def _datasets(cfg: TrainConfig) -> tuple[tuple[str, ...], Sequence[Any], Sequence[Any]]:
    data = find_class_folders(cfg.data)
    classes = tuple(c.label for c in data.labels)
    if len(classes) < 2:
        raise TrainError(f"{cfg.data} has {len(classes)} class folder: training needs at least two classes")
    if cfg.val is not None:
        val = find_class_folders(cfg.val)
        index = {name: i for i, name in enumerate(classes)}
        unknown = [c.label for c in val.labels if c.label not in index]
        if unknown:
            raise TrainError(f"validation classes {unknown} in {cfg.val} are not class folders of {cfg.data}")
        remap = [index[c.label] for c in val.labels]
        return classes, data.samples, [replace(s, label=remap[s.label]) for s in val.samples]
    if cfg.val_split == 0:
        return classes, data.samples, []
    train, held_out = split_samples(data.samples, cfg.val_split, cfg.seed)
    return classes, train, held_out


def _batches(loader: Any, device: torch.device, channels_last: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for x, y in loader:
        yield x.to(device, non_blocking=True, memory_format=fmt), y.to(device, non_blocking=True)


def train(config: TrainConfig, *, on_epoch: EpochCallback | None = None) -> TrainResult:
    """Run (or with ``config.resume`` continue) the training ``config`` describes; returns where the model is.

    ``on_epoch`` is called with each epoch's log record after its files are written (on every rank).
    """
    world, device = setup(_device(config.device))
    try:
        return _train(config, world, device, on_epoch)
    finally:
        teardown(world)


def _train(cfg: TrainConfig, world: World, device: torch.device, on_epoch: EpochCallback | None) -> TrainResult:
    run = cfg.output
    if cfg.batch_size % world.size:
        raise TrainError(
            f"--batch-size {cfg.batch_size} is the global batch: it must divide by WORLD_SIZE {world.size}"
        )
    state = load_checkpoint(run) if cfg.resume else None
    if state is None and (run / CHECKPOINT).exists():
        raise TrainError(f"{run} already holds a training run: pass --resume to continue it, or another --output")
    if state is not None and state["config"] != cfg.defining():
        saved, now = state["config"], cfg.defining()
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(now) if saved.get(k) != now[k])
        raise TrainError(f"--resume with a different run definition than {run / CHECKPOINT}: {diff}")

    source = resolve_source(cfg.model, cfg.weights, progress=world.is_main)
    classes, train_samples, val_samples = _datasets(cfg)
    preprocess = source.preprocess
    torch.manual_seed(cfg.seed)  # the new classifier's initialization
    record = source.record
    # The record's padding and BN eps, static SAME pads for the record's input size, a new classifier.
    net = source.build_model(num_classes=len(classes), drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate)
    if isinstance(net.classifier, nn.Linear) and (record is None or record.labels != classes):
        # A new task's classifier starts at zero (BiT, Kolesnikov et al. 2020, sec. 3.3): the TF
        # initializer's range 1/sqrt(num_classes) is tuned for 1,000 classes, and for two it gives
        # logits in the tens before the first step.
        nn.init.zeros_(net.classifier.weight)
        nn.init.zeros_(net.classifier.bias)
    frozen = freeze(net, cfg.freeze)
    net.set_grad_checkpointing(cfg.grad_checkpointing)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net = net.to(device).to(memory_format=fmt)  # type: ignore[call-overload]  # torch's stubs lack memory_format
    ema = copy.deepcopy(net).eval().requires_grad_(False) if cfg.ema_decay > 0 else None
    optimizer = torch.optim.AdamW(_param_groups(net, cfg.weight_decay), lr=cfg.lr, foreach=True)
    epoch0, step, best_epoch, best_acc, history = 0, 0, 0, None, []
    if state is not None:
        net.load_state_dict(state["model"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        epoch0, step, history = int(state["epoch"]), int(state["step"]), list(state["history"])
        best_epoch, best_acc = int(state["best_epoch"]), state["best_val_acc"]

    model: nn.Module = net
    if world.distributed:
        if device.type == "cuda" and not any(m is net.stages for m in frozen):
            # BN over the global batch, so N GPUs train like one (SyncBatchNorm is CUDA-only).
            model = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    bf16 = cfg.precision == "bf16" or (
        cfg.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    augment = Augment(scale=(cfg.min_scale, 1.0), trivial_augment=cfg.trivial_augment)
    train_set = ImageDataset(train_samples, preprocess, train=True, augment=augment, seed=cfg.seed)
    val_set = ImageDataset(val_samples, preprocess, train=False, augment=augment, seed=cfg.seed)
    per_rank = cfg.batch_size // world.size
    train_loader, val_loader = (
        _loader(train_set, per_rank, world, cfg, True),
        _loader(val_set, per_rank, world, cfg, False),
    )
    total = cfg.epochs * len(train_loader)
    warmup = min(round(cfg.warmup_epochs * len(train_loader)), total - 1)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    info = NativeInfo(
        model=source.model,
        preprocess=preprocess,
        labels=classes,
        num_classes=len(classes),
        padding=net.padding_mode,
        bn_eps=next(m.eps for m in net.modules() if isinstance(m, nn.BatchNorm2d)),
        source=weights_label(source),
    )

    for epoch in range(epoch0, cfg.epochs):
        torch.manual_seed(_seed(cfg.seed, epoch, world.rank))  # dropout and stochastic depth of this epoch
        cast(torch.utils.data.DistributedSampler, train_loader.sampler).set_epoch(epoch)
        train_set.set_epoch(epoch)
        model.train()
        for m in frozen:
            m.eval()
        sums = [0.0, 0.0, 0.0]  # loss * n, correct, n
        start = time.perf_counter()
        bar = tqdm(
            total=len(train_loader),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            file=sys.stderr,
            disable=not (cfg.progress and world.is_main),
            leave=True,
        )
        with bar:
            for x, y in _batches(train_loader, device, cfg.channels_last):
                lr = lr_at(step, total, warmup, cfg.lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = model(x)
                loss = criterion(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                if ema is not None:
                    _ema_update(ema, net, min(cfg.ema_decay, (1 + step) / (10 + step)))
                n = y.shape[0]
                sums = [sums[0] + loss.item() * n, sums[1] + (logits.argmax(1) == y).sum().item(), sums[2] + n]
                seen = sums[2] * world.size
                bar.set_postfix(
                    loss=f"{sums[0] / sums[2]:.4f}",
                    acc=f"{sums[1] / sums[2]:.3f}",
                    img_s=f"{seen / (time.perf_counter() - start):.1f}",
                )
                bar.update(1)
        loss_sum, correct, count = all_reduce_sum(sums, world, device)
        elapsed = time.perf_counter() - start
        evaluated = ema if ema is not None else net
        record_line: dict[str, Any] = {
            "epoch": epoch + 1,
            "epochs": cfg.epochs,
            "step": step,
            "lr": lr_at(step - 1, total, warmup, cfg.lr),
            "train_loss": loss_sum / count,
            "train_acc": correct / count,
            "train_images": int(count),
            "images_per_s": count / elapsed,
            "train_s": elapsed,
        }
        improved = True
        if val_samples:
            val_loss, val_acc = _validate(evaluated, val_loader, device, cfg.channels_last, bf16, world)
            record_line.update(val_loss=val_loss, val_acc=val_acc, val_images=len(val_samples))
            improved = best_acc is None or val_acc > best_acc
            if improved:
                best_epoch, best_acc = epoch + 1, val_acc
        elif improved:
            best_epoch = epoch + 1
        record_line.update(best=improved, weights="ema" if ema is not None else "model")
        history.append(record_line)
        if world.is_main:
            if improved:
                extra = {"epoch": epoch + 1, "val_acc": best_acc, "run": str(run), "train": cfg.to_json()}
                save_native(evaluated.state_dict(), run / MODEL, replace(info, extra=extra))
            save_checkpoint(
                run,
                {
                    "config": cfg.defining(),
                    "epoch": epoch + 1,
                    "step": step,
                    "model": net.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None,
                    "optimizer": optimizer.state_dict(),
                    "best_epoch": best_epoch,
                    "best_val_acc": best_acc,
                    "history": history,
                    "classes": list(classes),
                },
            )
            write_log(run, history)
        if on_epoch is not None:
            on_epoch(record_line)
    return TrainResult(run / MODEL, classes, best_epoch, best_acc, tuple(history), world.is_main)


@torch.no_grad()
def _validate(
    model: nn.Module, loader: Any, device: torch.device, channels_last: bool, bf16: bool, world: World
) -> tuple[float, float]:
    model.eval()
    sums = [0.0, 0.0, 0.0]
    for x, y in _batches(loader, device, channels_last):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x).float()
        loss = nn.functional.cross_entropy(logits, y, reduction="sum")
        sums = [sums[0] + float(loss), sums[1] + float((logits.argmax(1) == y).sum()), sums[2] + y.shape[0]]
    loss_sum, correct, count = all_reduce_sum(sums, world, device)
    return loss_sum / count, correct / count
