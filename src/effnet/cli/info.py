"""effnet info — weights record, input/output spec, parameters and FLOPs of a model."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    from . import add_model_arguments

    p = sub.add_parser("info", help="describe a model and its weights", description=__doc__)
    add_model_arguments(p)  # --weights FILE: a fine-tuned file describes itself (and names its model)
    p.add_argument(
        "--model-path",
        default=None,
        metavar="FILE",
        help="an exported model file (.onnx, .xml, .tflite): describe it by what it says about itself",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


_MODEL_FILES = (".onnx", ".xml", ".tflite")


def _described(args: argparse.Namespace) -> tuple[dict, dict | None]:
    """model_info for what the flags name, by the rules every other command reads a file with: a model file
    by its own description (effnet.artifact), a checkpoint made elsewhere by the one foreign-file rule
    (resolve_source; never the default B5 in its place)."""
    from pathlib import Path

    from ..errors import EffnetError
    from ..info import model_info
    from ..source import resolve_source

    if args.model_path is not None:
        from ..artifact import read_artifact_info

        art = read_artifact_info(args.model_path)
        if art.info is None:
            raise EffnetError(f"{args.model_path} carries no effnet metadata: nothing in it says which model it is")
        record = art.info.to_record(Path(args.model_path))
        extra = {
            "kind": art.kind,
            "output": art.output or "not said",
            "weights": art.weights or "not said",
            "weights_file_sha256": art.weights_file_sha256,
            "code_version": art.code_version,
            "effnet_version": art.effnet_version,
        }
        return model_info(art.info.model, record), extra
    weights = args.weights
    if weights is not None and Path(weights).suffix.lower() in _MODEL_FILES:
        raise EffnetError(
            f"{weights} is a model file, not weights: describe it with `effnet info --model-path {weights}`"
        )
    if weights is not None and Path(weights).is_file():
        source = resolve_source(args.model, weights, download=False, progress=False)
        return model_info(source.model, source.record), None
    return model_info(args.model, weights), None


def run(args: argparse.Namespace) -> int:
    info, file = _described(args)
    if file is not None:
        info = {**info, "file": file}
        if file["output"] == "logits":  # the file's rows, not the PyTorch model's softmax
            info["output"] = {**info["output"], "meaning": "logits (effnet soft-maxes them)"}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    a, i, o, c, w = info["architecture"], info["input"], info["output"], info["complexity"], info["weights"]
    print(
        f"{info['model']}: width x{a['width']}, depth x{a['depth']}, {a['resolution']} px, dropout {a['dropout']}, "
        f"{a['activation']}, {'SE' if a['squeeze_excite'] else 'no SE'}"
    )
    print(
        f"  stem {a['stem_channels']}, stages {a['stage_repeats']} ({a['blocks']} blocks) "
        f"-> {a['stage_channels']}, head {a['head_channels']}, feature map {a['feature_map']}"
    )
    print(f"  padding {a['padding']}, BN eps {a['bn_eps']}")
    print(
        f"input  {i['name']}: {'x'.join(map(str, i['shape']))} {i['layout']} {i['channel_order']}, "
        f"mean {i['mean']}, std {i['std']} ({i['note']})"
    )
    print(f"output {o['name']}: {'x'.join(map(str, o['shape']))}, {o['meaning']}")
    print(
        f"params {c['params']:,} (PyTorch); {c['params_bn_folded']:,} with BN folded "
        f"({c['params_bn_folded'] / 1e6:.3f} M, the card's convention)"
    )
    print(f"GFLOPs {c['gflops']} (2 x {c['macs']:,} MACs of conv/linear; element-wise ops not counted)")
    if w:
        m = w["metrics"]
        pp = w["preprocess"]
        print(
            f"weights {w['name']}: {w['filename']} (sha256 {w['sha256']}{'...' if w['sha256_is_prefix'] else ''}"
            f"{', ' + format(w['size'], ',') + ' bytes' if w['size'] else ''})"
        )
        print(f"  preprocess: {pp['interpolation']} resize to {pp['resize_size']}, center crop {pp['input_size']}")
        if m:
            print(f"  reference: top-1 {m['top1']} %, top-5 {m['top5']} % on {m['dataset']} ({m['source']})")
    if file is not None:
        print(
            f"file {file['kind']}: output {file['output']}, exported from {file['weights']}"
            f" (sha256 {(file['weights_file_sha256'] or 'not said')[:12]}), code {file['code_version'] or 'not said'}"
        )
    if info["other_weights"]:
        print(f"other weights: {', '.join(info['other_weights'])}")
    return 0
