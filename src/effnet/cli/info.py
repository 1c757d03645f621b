"""effnet info — weights record, input/output spec, parameters and FLOPs of a model."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    from . import add_model_arguments

    p = sub.add_parser("info", help="describe a model and its weights", description=__doc__)
    add_model_arguments(p)  # --weights FILE: a fine-tuned file describes itself (and names its model)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..info import model_info

    info = model_info(args.model, args.weights)
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
    if info["other_weights"]:
        print(f"other weights: {', '.join(info['other_weights'])}")
    return 0
