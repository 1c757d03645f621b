"""A tiny real ``.tflite`` in effnet's input convention, written with the runtime's own flatbuffer schema.

The converter (``effnet[litert]``: litert-torch, jax, transformers, ~1 GB) is not in the default install, so
the runtime tests run the LiteRT backend on this instead: uint8 ``[1, S, S, 3]`` RGB crop -> CAST -> MEAN over
H, W -> FULLY_CONNECTED (``[classes, 3]`` weights, bias) -> SOFTMAX. :func:`reference` computes the same in
NumPy, so a test sees whether the backend feeds the crop as it is (dtype, layout, channel order, batch order).
"""

from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema


def _tensor(shape: list[int], dtype: int, buffer: int, name: str) -> schema.TensorT:
    t = schema.TensorT()
    t.shape, t.type, t.buffer, t.name = shape, dtype, buffer, name.encode()
    return t


def _buffer(data: np.ndarray | None) -> schema.BufferT:
    b = schema.BufferT()
    if data is not None:
        b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
    return b


def weights(classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """FC weights and bias: channel-specific, so an RGB/BGR swap or an NCHW read changes the answer."""
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.05, (classes, 3)).astype(np.float32), rng.normal(0, 1, classes).astype(np.float32))


def reference(crops: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    logits = crops.astype(np.float32).mean(axis=(1, 2)) @ w.T + b
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def write_tiny_tflite(path: Path, size: int, w: np.ndarray, b: np.ndarray) -> Path:
    ops = [schema.BuiltinOperator.CAST, schema.BuiltinOperator.MEAN]
    ops += [schema.BuiltinOperator.FULLY_CONNECTED, schema.BuiltinOperator.SOFTMAX]
    codes = []
    for op in ops:
        c = schema.OperatorCodeT()
        c.builtinCode = c.deprecatedBuiltinCode = op
        c.version = 1
        codes.append(c)
    classes = len(b)
    buffers = [_buffer(None), _buffer(np.array([1, 2], np.int32)), _buffer(w), _buffer(b)]
    buffers += [_buffer(None) for _ in range(5)]  # one empty buffer per activation tensor
    tensors = [
        _tensor([1, size, size, 3], schema.TensorType.UINT8, 4, "pixels"),
        _tensor([1, size, size, 3], schema.TensorType.FLOAT32, 5, "float"),
        _tensor([2], schema.TensorType.INT32, 1, "axes"),
        _tensor([1, 3], schema.TensorType.FLOAT32, 6, "pooled"),
        _tensor([classes, 3], schema.TensorType.FLOAT32, 2, "fc_w"),
        _tensor([classes], schema.TensorType.FLOAT32, 3, "fc_b"),
        _tensor([1, classes], schema.TensorType.FLOAT32, 7, "logits"),
        _tensor([1, classes], schema.TensorType.FLOAT32, 8, "prob"),
    ]

    def op(index: int, inputs: list[int], outputs: list[int], kind: int, options: object) -> schema.OperatorT:
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = index, inputs, outputs
        o.builtinOptionsType, o.builtinOptions = kind, options
        return o

    cast = schema.CastOptionsT()
    cast.inDataType, cast.outDataType = schema.TensorType.UINT8, schema.TensorType.FLOAT32
    mean = schema.ReducerOptionsT()
    mean.keepDims = False
    softmax = schema.SoftmaxOptionsT()
    softmax.beta = 1.0
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.name = tensors, [0], [7], b"main"
    graph.operators = [
        op(0, [0], [1], schema.BuiltinOptions.CastOptions, cast),
        op(1, [1, 2], [3], schema.BuiltinOptions.ReducerOptions, mean),
        op(2, [3, 4, 5], [6], schema.BuiltinOptions.FullyConnectedOptions, schema.FullyConnectedOptionsT()),
        op(3, [6], [7], schema.BuiltinOptions.SoftmaxOptions, softmax),
    ]
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, codes, [graph], buffers
    model.description = b"effnet test model"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path
