"""Write Keras 3 EfficientNet checkpoints with random weights and Keras' own logits for them (a script).

Run as `python tests/parity/keras_reference.py OUTDIR MODEL SIZE [SIZE...]` in a subprocess, so that Keras
(torch backend, no TensorFlow) is imported in its own process and never into the test session. It builds
`keras.applications.EfficientNetB*(weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None)`
(logits: the applications' default softmax would hide small differences), gives every layer random
weights (BN statistics measured on random images) and the input Normalization ImageNet statistics, saves them as Keras 3
`model.weights.h5` and the legacy HDF5 `model.h5`, and for each SIZE (a model built at that size, because
Keras computes its ZeroPadding2D pads from the static input shape) writes the input pixels `x_SIZE.npy`
(0-255, NHWC: Keras applications include Rescaling and Normalization in the graph) and `logits_SIZE.npy`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"

import numpy as np  # noqa: E402


def main(out: Path, model: str, sizes: list[int]) -> None:
    import keras

    keras.utils.set_random_seed(0)  # Keras' own initializers: the same weights on every run
    build = getattr(keras.applications, model)
    rng = np.random.default_rng(0)
    for n, size in enumerate(sizes):
        km = build(weights=None, input_shape=(size, size, 3), classifier_activation=None)
        if n == 0:
            for layer in km.layers:
                ws = layer.get_weights()
                if not ws:
                    continue
                if isinstance(layer, keras.layers.Normalization):
                    mean, var = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]) ** 2
                    layer.set_weights([mean.astype(np.float32), var.astype(np.float32), ws[2]])
                elif isinstance(layer, keras.layers.BatchNormalization):
                    c = ws[0].shape[0]
                    gamma, beta = rng.uniform(0.5, 1.5, c), rng.uniform(-0.5, 0.5, c)
                    layer.set_weights([a.astype(np.float32) for a in (gamma, beta, ws[2], ws[3])])
                    layer.momentum = 0.0  # the one calibration pass below sets the moving statistics
                elif isinstance(layer, keras.layers.Dense):  # widened: Keras' init gives logits well below 1
                    layer.set_weights([rng.normal(0.0, 0.1, w.shape).astype(np.float32) for w in ws])
                else:
                    layer.set_weights([(w + rng.normal(0.0, 0.01, w.shape)).astype(np.float32) for w in ws])
            # Moving mean/variance measured on random images (momentum 0: the batch's own statistics), so
            # they are non-trivial yet keep the signal alive; arbitrary random statistics make the logits
            # independent of the input, and then any padding would "match".
            km(rng.uniform(0, 255, (4, size, size, 3)).astype(np.float32), training=True)
            km.save_weights(out / "model.weights.h5")
            km.save(out / "model.h5")  # legacy HDF5 (Keras warns that the format is legacy)
        else:
            km.load_weights(out / "model.weights.h5")
        x = rng.uniform(0, 255, (2, size, size, 3)).astype(np.float32)
        logits = np.asarray(km(x, training=False).detach().cpu())
        np.save(out / f"x_{size}.npy", x)
        np.save(out / f"logits_{size}.npy", logits)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], [int(s) for s in sys.argv[3:]])
