"""Device strings: the one parser and validator behind ``--device`` and ``Classifier(device=...)``.

Accepted: ``cpu``, ``cuda``, ``cuda:N`` and ``auto`` (CUDA when ``torch.cuda.is_available()``, else
the CPU). :func:`parse_device` checks the spelling only (no torch import, usable while parsing
arguments); :func:`resolve_device` also checks that the device exists here and raises a clear
:class:`DeviceError` when CUDA is asked for and absent, naming the torch build.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .errors import EffnetError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["DEVICES", "DeviceError", "parse_device", "resolve_device", "is_cuda", "device_kind", "describe_device"]

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
_SPELLING = re.compile(r"^(auto|cpu|cuda(?::(\d+))?)$")


class DeviceError(EffnetError, ValueError):
    """A device string that is misspelt, or names a device this machine does not have."""


def parse_device(text: str) -> str:
    """The canonical spelling of ``text`` (stripped, lower case); raises :class:`DeviceError` if it is none of
    ``auto``, ``cpu``, ``cuda``, ``cuda:N``."""
    canonical = str(text).strip().lower()
    if not _SPELLING.match(canonical):
        raise DeviceError(f"device must be one of {', '.join(DEVICES)}, got {text!r}")
    return canonical


def _no_cuda_reason(torch_module) -> str:
    version = torch_module.__version__
    if torch_module.version.cuda is None:
        return f"this torch is {version}, built without CUDA"
    return f"this torch is {version} (CUDA {torch_module.version.cuda}), but no GPU is visible"


def resolve_device(text: str = "auto") -> torch.device:
    """A ``torch.device`` that exists here for ``text`` (``auto``: ``cuda`` when available, else ``cpu``).

    ``cuda`` means the current CUDA device (index 0 unless ``CUDA_VISIBLE_DEVICES`` or
    ``torch.cuda.set_device`` say otherwise); ``cuda:N`` must be below ``torch.cuda.device_count()``.
    """
    import torch

    canonical = parse_device(text)
    if canonical == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if canonical == "auto":
        return torch.device("cuda") if available else torch.device("cpu")
    if not available:
        raise DeviceError(
            f"CUDA requested (--device {canonical}) but torch.cuda.is_available() is False: "
            f"{_no_cuda_reason(torch)}; use --device cpu (or auto)"
        )
    device = torch.device(canonical)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(f"--device {canonical}: this machine has {count} CUDA device(s), indices 0-{count - 1}")
    return device


def device_kind(device: str | torch.device) -> str:
    """``"cpu"`` or ``"cuda"`` for a device string or ``torch.device`` (``auto`` must be resolved first)."""
    kind = device.type if not isinstance(device, str) else parse_device(device).split(":")[0]
    if kind == "auto":
        raise DeviceError("device 'auto' has no kind until it is resolved (resolve_device)")
    return kind


def is_cuda(device: str | torch.device) -> bool:
    return device_kind(device) == "cuda"


def describe_device(device: torch.device) -> dict[str, object]:
    """What a report names: the device, and for CUDA the GPU, its memory, CUDA and driver versions."""
    import torch

    info: dict[str, object] = {"device": str(device)}
    if device.type != "cuda":
        return info
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    info.update(
        gpu=props.name,
        gpu_memory_gib=round(props.total_memory / 2**30, 1),
        compute_capability=f"{props.major}.{props.minor}",
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version(),
    )
    try:  # the driver version is not in torch's API; NVML has it when the package is there
        import pynvml

        pynvml.nvmlInit()
        info["driver"] = pynvml.nvmlSystemGetDriverVersion()
    except Exception:  # noqa: BLE001 - optional: absent package or NVML, the report says unknown
        info["driver"] = _driver_from_proc()
    return info


def _driver_from_proc() -> str | None:
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8") as f:
            first = f.readline()
    except OSError:
        return None
    match = re.search(r"Kernel Module\s+(\S+)", first) or re.search(r"(\d+\.\d+(?:\.\d+)?)", first)
    return match.group(1) if match else None
