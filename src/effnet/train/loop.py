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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from tqdm import tqdm

from ..source import resolve_source, weights_label
from ..weights.native import NativeInfo, save_native
from .calibrate import Calibration, fit_temperature
from .checkpoint import CHECKPOINT, LOG, MODEL, load_checkpoint, save_checkpoint, write_log
from .config import SMALL_DATA, TrainConfig, TrainError, auto_batch_size, auto_min_scale, freeze
from .data import Augment, GlobalBatchSampler, ImageDataset, majority_baseline, split_datasets
from .distributed import World, all_reduce_sum, setup, teardown
from .optim import ema_update, epoch_seed, is_bn, lr_at, param_groups, resolve_device
from .passes import check_data, device_batches, embed_samples, embedding_name, make_loader, probe_on, validate
from .probe import ProbeFit
from .runfiles import calibration_line, epoch_line, load_saved, say, write_plots, write_run_file

__all__ = ["TrainResult", "train"]

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrainResult:
    output: Path  # RUN/model.safetensors
    classes: tuple[str, ...]
    best_epoch: int
    best_val_acc: float | None
    history: tuple[dict[str, Any], ...]
    is_main: bool = True  # rank 0 (the process that wrote the files) or a single process
    majority_acc: float | None = None  # validation accuracy of always answering the training majority class
    majority_class: str = ""
    val_images: int = 0
    calibration: Calibration | None = None

    @property
    def learned_nothing(self) -> bool:
        """The best model is within one validation image of the majority-class baseline."""
        if self.best_val_acc is None or self.majority_acc is None or not self.val_images:
            return False
        return (self.best_val_acc - self.majority_acc) * self.val_images <= 1.0 + 1e-9


def train(config: TrainConfig, *, on_epoch: EpochCallback | None = None) -> TrainResult:
    """Run (or with ``config.resume`` continue) the training ``config`` describes; returns where the model is.

    ``on_epoch`` is called with each epoch's log record after its files are written (on every rank).
    """
    world, device = setup(resolve_device(config.device))
    try:
        return _train(config, world, device, on_epoch)
    finally:
        teardown(world)


def _train(cfg: TrainConfig, world: World, device: torch.device, on_epoch: EpochCallback | None) -> TrainResult:
    run = cfg.output
    state = load_checkpoint(run) if cfg.resume else None
    if state is None and (run / CHECKPOINT).exists():
        raise TrainError(f"{run} already holds a training run: pass --resume to continue it, or another --output")
    if state is not None and state["config"] != cfg.defining():
        saved, now = state["config"], cfg.defining()
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(now) if saved.get(k) != now[k])
        raise TrainError(f"--resume with a different run definition than {run / CHECKPOINT}: {diff}")

    source = resolve_source(cfg.model, cfg.weights, progress=world.is_main)
    classes, train_samples, val_samples = split_datasets(cfg)
    n_train = len(train_samples)
    batch = cfg.batch_size if cfg.batch_size is not None else auto_batch_size(n_train, world.size)
    if batch % world.size:
        raise TrainError(f"--batch-size {batch} is the global batch: it must divide by WORLD_SIZE {world.size}")
    min_scale = cfg.min_scale if cfg.min_scale is not None else auto_min_scale(n_train)
    body_frozen = cfg.freeze == "body"
    # Small data keeps the pretrained BN statistics (Keras' transfer-learning guide: fine-tune with BN in
    # inference mode, or the first updates from a few batches' statistics destroy what the model learned).
    bn_frozen = body_frozen or cfg.bn_stats == "frozen" or (cfg.bn_stats == "auto" and n_train < SMALL_DATA)
    preprocess = source.preprocess
    torch.manual_seed(cfg.seed)  # the new classifier's initialization
    record = source.record
    # The record's padding and BN eps, static SAME pads for the record's input size, a new classifier.
    net = source.build_model(num_classes=len(classes), drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate)
    classifier = net.classifier if isinstance(net.classifier, nn.Linear) else None
    new_head = classifier is not None and (record is None or record.labels != classes)
    if classifier is not None and new_head:
        # A new task's classifier starts at zero (BiT, Kolesnikov et al. 2020, sec. 3.3): the TF
        # initializer's range 1/sqrt(num_classes) is tuned for 1,000 classes, and for two it gives
        # logits in the tens before the first step. With --probe (the default) the linear probe replaces it.
        nn.init.zeros_(classifier.weight)
        nn.init.zeros_(classifier.bias)
    fit: ProbeFit | None = None
    probe_s = 0.0
    # --freeze body from a file with these classes (a fine-tuned run) refits its classifier by the probe too,
    # unless an earlier probe already cut the network (its stage is fixed): then SGD, and that is said.
    refit = new_head or (body_frozen and cfg.probe and net.embedding_stage is None)
    if body_frozen and cfg.probe and not refit:
        say(
            world,
            f"--freeze body: {cfg.weights} already ends at stage {net.embedding_stage}; training its classifier by SGD",
        )
    if state is None and cfg.probe and classifier is not None and refit:
        start = time.perf_counter()
        embedded = embed_samples(net.to(device), train_samples, preprocess, world, device, cfg, batch)
        fit = probe_on(embedded, len(classes), cfg.seed)
        check_data(net, embedded, fit, val_samples, preprocess, world, device, cfg, batch, len(classes))
        if fit.embedding_stage is not None:
            net.truncate(fit.embedding_stage)  # the probe reads an intermediate stage: the network ends there
        layer = cast(nn.Linear, net.classifier)  # new_head: a Linear (truncate made a new one, on the CPU)
        with torch.no_grad():
            layer.weight.copy_(fit.weight.to(layer.weight.device))
            layer.bias.copy_(fit.bias.to(layer.bias.device))
        probe_s = time.perf_counter() - start
    elif state is not None and state.get("embedding_stage") is not None:
        net.truncate(int(state["embedding_stage"]))  # resuming a run whose probe cut the network
    # Read before any SyncBatchNorm conversion (which replaces every BatchNorm2d), from the model as built.
    bn_eps = float(next(m for m in net.modules() if is_bn(m)).eps)  # type: ignore[arg-type]
    frozen = freeze(net, cfg.freeze)
    net.set_grad_checkpointing(cfg.grad_checkpointing)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net = net.to(device).to(memory_format=fmt)  # type: ignore[call-overload]  # torch's stubs lack memory_format
    bf16 = cfg.precision == "bf16" or (
        cfg.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    augment = Augment(scale=(min_scale, 1.0), trivial_augment=cfg.trivial_augment)
    train_set = ImageDataset(train_samples, preprocess, train=True, augment=augment, seed=cfg.seed)
    val_set = ImageDataset(val_samples, preprocess, train=False, augment=augment, seed=cfg.seed)
    train_loader = make_loader(train_set, batch, world, cfg, True)
    val_loader = make_loader(val_set, batch, world, cfg, False)
    sampler: GlobalBatchSampler = train_loader.batch_sampler
    steps_per_epoch = len(sampler)
    probe_only = body_frozen and cfg.probe and classifier is not None and refit
    # The schedule is sized in optimizer steps: a small folder still gets min_steps updates.
    epochs = 0 if probe_only else max(cfg.epochs, -(-cfg.min_steps // steps_per_epoch))
    total = max(1, epochs * steps_per_epoch)
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total - 1)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing, reduction="sum")
    majority_label, majority = majority_baseline(train_samples, val_samples)
    info = NativeInfo(
        model=source.model,
        preprocess=preprocess,
        labels=classes,
        num_classes=len(classes),
        padding=net.padding_mode,
        bn_eps=bn_eps,
        source=weights_label(source),
        embedding_stage=net.embedding_stage,
    )
    resolved = {
        "batch_size": batch,
        "min_scale": min_scale,
        "epochs": epochs,
        "bn_stats": "frozen" if bn_frozen else "train",
    }
    if world.is_main and cfg.progress:
        say(
            world,
            f"{n_train} training images, {len(val_samples)} validation; "
            + ", ".join(f"{k} {v}" for k, v in resolved.items()),
        )
        if epochs > cfg.epochs:
            say(
                world,
                f"{cfg.epochs} epochs of {steps_per_epoch} steps are fewer than --min-steps {cfg.min_steps}: "
                f"training {epochs} epochs",
            )
        if probe_only and cfg.epochs != TrainConfig.epochs:
            say(
                world,
                "--freeze body: the classifier is the linear probe's optimum, --epochs is not used "
                "(--no-probe trains it by SGD)",
            )

    epoch0, step, best_epoch, best_acc, history = 0, 0, 0, None, []
    best_logits: tuple[torch.Tensor, torch.Tensor] | None = None
    if state is not None:
        net.load_state_dict(state["model"])
        epoch0, step, history = int(state["epoch"]), int(state["step"]), list(state["history"])
        best_epoch, best_acc = int(state["best_epoch"]), state["best_val_acc"]

    def save_model(evaluated: nn.Module, epoch: int, acc: float | None, extra: dict[str, Any] | None = None) -> None:
        meta: dict[str, Any] = {"epoch": epoch, "val_acc": acc, "majority_acc": majority if val_samples else None}
        meta.update(run=str(run), train=cfg.to_json(), resolved=resolved, **(extra or {}))
        write_run_file(run / MODEL, lambda: save_native(evaluated.state_dict(), run / MODEL, replace(info, extra=meta)))

    def finish_epoch(record_line: dict[str, Any], evaluated: nn.Module, ema_state: Any, optimizer_state: Any) -> None:
        nonlocal best_epoch, best_acc, best_logits
        improved = True
        if val_samples:
            val = validate(evaluated, val_loader, device, cfg, bf16, world)
            record_line.update(
                val_loss=val.loss, val_nll=val.nll, val_acc=val.acc, val_images=len(val_samples), majority_acc=majority
            )
            improved = best_acc is None or val.acc > best_acc
            if improved:
                best_epoch, best_acc, best_logits = record_line["epoch"], val.acc, (val.logits, val.labels)
        elif improved:
            best_epoch = record_line["epoch"]
        record_line.update(best=improved)
        history.append(record_line)
        say(world, epoch_line(record_line))
        if world.is_main:
            if improved:
                save_model(evaluated, record_line["epoch"], best_acc)
            checkpoint = {
                "config": cfg.defining(),
                "epoch": record_line["epoch"],
                "step": step,
                "model": net.state_dict(),
                "embedding_stage": net.embedding_stage,
                "ema": ema_state,
                "optimizer": optimizer_state,
                "best_epoch": best_epoch,
                "best_val_acc": best_acc,
                "history": history,
                "classes": list(classes),
            }
            write_run_file(run / CHECKPOINT, lambda: save_checkpoint(run, checkpoint))
            write_run_file(run / LOG, lambda: write_log(run, history))
        if on_epoch is not None:
            on_epoch(record_line)

    if fit is not None:
        line = {
            "epoch": 0,
            "epochs": epochs,
            "phase": "linear probe",
            "step": 0,
            "probe_embedding": embedding_name(fit.embedding_stage),
            "probe_l2": fit.l2,
            "probe_cv_acc": fit.cv_acc[fit.l2],
            "probe_folds": fit.folds,
            "probe_candidates": {embedding_name(s): {"cv_nll": n, "cv_acc": a} for s, n, a in fit.candidates},
            "train_images": n_train,
            "train_s": probe_s,
            "weights": "model",
        }
        finish_epoch(line, net, None, None)

    ema = copy.deepcopy(net).eval().requires_grad_(False) if cfg.ema_decay > 0 and epochs else None
    head = [p for p in net.classifier.parameters() if p.requires_grad]
    body = [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith("classifier.")]
    # A lower peak rate for the pretrained body than for the classifier (timm's layer-wise decay and
    # fastai's discriminative rates in their simplest form: two groups).
    optimizer = torch.optim.AdamW(
        param_groups(head, cfg.weight_decay, 1.0) + param_groups(body, cfg.weight_decay, cfg.body_lr_scale),
        lr=cfg.lr,
        foreach=True,
    )
    if state is not None:
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        if state.get("optimizer") is not None:
            optimizer.load_state_dict(state["optimizer"])

    model: nn.Module = net
    if world.distributed and epochs:
        if device.type == "cuda" and not bn_frozen:
            # BN over the global batch, so N GPUs train like one (SyncBatchNorm is CUDA-only).
            model = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    for epoch in range(epoch0, epochs):
        torch.manual_seed(epoch_seed(cfg.seed, epoch, world.rank))  # dropout and stochastic depth of this epoch
        sampler.set_epoch(epoch)
        sizes = sampler.global_sizes()
        train_set.set_epoch(epoch)
        model.train()
        for m in frozen:
            m.eval()
        if bn_frozen:
            for m in net.modules():
                if is_bn(m):
                    m.eval()
        sums = [0.0, 0.0, 0.0]  # loss * n, correct, n
        start = time.perf_counter()
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{epochs}",
            unit="batch",
            file=sys.stderr,
            disable=not (cfg.progress and world.is_main),
            leave=False,
        )
        with bar:
            for k, (x, y) in enumerate(device_batches(train_loader, device, cfg.channels_last)):
                lr = lr_at(step, total, warmup, cfg.lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group["lr_scale"]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = model(x)
                loss_sum = criterion(logits.float(), y)
                # The mean over the global batch once DDP has averaged the ranks' gradients: a rank's share
                # may be an image larger or smaller than another's.
                loss = loss_sum * (world.size / sizes[k])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                if ema is not None:
                    ema_update(ema, net, min(cfg.ema_decay, (1 + step) / (10 + step)))
                n = y.shape[0]
                sums = [sums[0] + loss_sum.item(), sums[1] + (logits.argmax(1) == y).sum().item(), sums[2] + n]
                bar.set_postfix(loss=f"{sums[0] / sums[2]:.4f}", acc=f"{sums[1] / sums[2]:.3f}")
                bar.update(1)
        loss_total, correct, count = all_reduce_sum(sums, world, device)
        elapsed = time.perf_counter() - start
        evaluated = ema if ema is not None else net
        record_line: dict[str, Any] = {
            "epoch": epoch + 1,
            "epochs": epochs,
            "phase": "fine-tune",
            "step": step,
            "lr": lr_at(step - 1, total, warmup, cfg.lr),
            "train_loss": loss_total / count,
            "train_acc": correct / count,
            "train_images": int(count),
            "images_per_s": count / elapsed,
            "train_s": elapsed,
            "weights": "ema" if ema is not None else "model",
        }
        finish_epoch(record_line, evaluated, ema.state_dict() if ema is not None else None, optimizer.state_dict())

    calibration = None
    if world.is_main and cfg.calibrate and best_logits is not None and (run / MODEL).is_file():
        calibration = fit_temperature(*best_logits)
        say(world, calibration_line(calibration))
        best = load_saved(run / MODEL)
        extra = dict(best.info.extra, calibration=calibration.to_json())
        temperature = calibration.temperature
        write_run_file(
            run / MODEL,
            lambda: save_native(best.state, run / MODEL, replace(best.info, extra=extra, temperature=temperature)),
        )
    if world.is_main:
        write_plots(run, history, majority if val_samples else None, best_logits, classes)
    return TrainResult(
        run / MODEL,
        classes,
        best_epoch,
        best_acc,
        tuple(history),
        world.is_main,
        majority_acc=majority if val_samples else None,
        majority_class=classes[majority_label],
        val_images=len(val_samples),
        calibration=calibration,
    )
