"""Read checkpoint files safely and load them strictly.

``.pth`` / ``.pt`` / ``.bin`` go through ``torch.load(weights_only=True)``: the
unpickler only rebuilds tensors and plain containers, so a checkpoint cannot run
code on load. ``.safetensors`` needs no unpickling at all and is preferred.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..specs import ArchPlan
from .convert import _OPTIONAL, convert_state_dict, unwrap
from .native import check_tensors, read_native_info
from .records import KeyFormat

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


class CorruptCheckpointError(CheckpointError):
    """A checkpoint whose bytes cannot be read at all (empty, truncated, not a checkpoint): no conversion helps."""


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` (``.safetensors`` or a torch pickle), on the CPU."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist or is not a file")
    if p.stat().st_size == 0:
        raise CorruptCheckpointError(f"checkpoint {p} is empty (0 bytes): nothing to read")
    if p.suffix.lower() in (".h5", ".hdf5", ".keras"):
        raise CheckpointError(
            f"{p} is a Keras file: convert it once with `effnet weights convert {p} OUT.safetensors` "
            "(it carries the Keras model's own preprocessing), then use OUT.safetensors"
        )
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CorruptCheckpointError(f"cannot read safetensors checkpoint {p}: {e}") from None
        info = read_native_info(p)
        if info is not None:
            check_tensors(state, info, str(p))
        return unwrap(state)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses globals it does not allow: the file would run code or build objects.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"refusing to load {p}: it contains Python objects other than tensors, which could run code "
            f"when unpickled (torch.load weights_only=True said: {first}). Re-save it as a plain state dict "
            "or as .safetensors."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CorruptCheckpointError(
            f"checkpoint {p} is truncated or corrupt (not a readable PyTorch file): {msg.rstrip('.')}"
        ) from None
    return unwrap(obj)


def load_into(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    plan: ArchPlan,
    *,
    key_format: KeyFormat | None = None,
    source: str = "checkpoint",
    skip_classifier: bool = False,
) -> None:
    """Convert ``state`` and load it into ``model``, strictly.

    Every missing, unexpected and mis-shaped key is listed in one error.
    ``skip_classifier`` leaves the model's own (new) classifier in place, for a
    different number of classes.
    """
    converted, unmapped = convert_state_dict(state, plan, key_format)
    own = model.state_dict()
    if skip_classifier:
        converted = {k: v for k, v in converted.items() if not k.startswith("classifier.")}
    missing = [
        k
        for k in own
        if k not in converted and not k.endswith(_OPTIONAL) and not (skip_classifier and k.startswith("classifier."))
    ]
    unexpected = unmapped + [k for k in converted if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in converted.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = [f"{source} does not fit {plan.variant.name}:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
            if items:
                parts.append(f"  {len(items)} {title}: " + ", ".join(items))
        raise CheckpointError("\n".join(parts))
    for k, v in converted.items():
        if v.is_floating_point() and not own[k].is_floating_point():
            raise CheckpointError(f"{source}: {k} is {v.dtype}, model expects {own[k].dtype}")
    model.load_state_dict({k: v for k, v in converted.items() if k in own}, strict=False)
