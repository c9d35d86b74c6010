"""The tensors a built-in layer's config implies, by name and shape, known before the layer is built.

A model file's config says how large each layer is; 366 bytes can ask for a ``Linear`` of
gigabytes. The loader compares these shapes with the file's arrays *before* calling the
constructor (``state_checks.check_expected_shapes``), so such a file is refused without allocating
anything. Only the layers whose tensors grow with their config are listed; every other class is
checked right after it is built, and ``tests/io/test_model_file.py`` holds this table to the real
modules.
"""
from __future__ import annotations

from typing import Any, Callable

Shapes = dict[str, tuple[int, ...]]


def linear_weight_shape(config: dict) -> tuple[int, ...]:
    """(out_features, in_features)"""
    return config["out_features"], config["in_features"]


def conv_weight_shape(config: dict) -> tuple[int, ...]:
    """(out_channels, in_channels / groups, *kernel_size)"""
    return (config["out_channels"], config["in_channels"] // config["groups"], *config["kernel_size"])


def _with_bias(weight: tuple[int, ...], config: dict) -> Shapes:
    return {"weight": weight, **({"bias": weight[:1]} if config.get("bias", True) else {})}


def _batch_norm(config: dict) -> Shapes:
    n = (config["num_features"],)
    shapes: Shapes = {}
    if config.get("affine", True):
        shapes.update(_with_bias(n, config))
    if config.get("track_running_stats", True):
        shapes.update(running_mean=n, running_var=n, num_batches_tracked=())
    return shapes


def _quantized(weight_shape: Callable[[dict], tuple[int, ...]], static: bool) -> Callable[[dict], Shapes]:
    """An int8 layer (quant_configs.py): weight, its per-tensor or per-channel qparams, bias, output qparams."""
    def shapes(config: dict) -> Shapes:
        weight = weight_shape(config)
        qparams = weight[:1] if config["per_channel"] else ()
        out = {"weight": weight, "weight_scale": qparams, "weight_zero_point": qparams}
        out.update({"bias": weight[:1]} if config["bias"] else {})
        return {**out, "scale": (), "zero_point": ()} if static else out
    return shapes


def _recurrent(gates: int) -> Callable[[dict], Shapes]:
    """RNN (1 gate), LSTM (4), GRU (3): per layer l and direction, weight_ih_l{l} (G, I_l), weight_hh_l{l}
    (G, P or H), biases (G,), weight_hr_l{l} (P, H) with proj_size P > 0; G = gates * H."""
    def shapes(config: dict) -> Shapes:
        H, P, D = config["hidden_size"], config.get("proj_size", 0), 2 if config.get("bidirectional") else 1
        G, out = gates * H, P or H
        result: Shapes = {}
        for layer in range(config.get("num_layers", 1)):
            for suffix in [f"_l{layer}", f"_l{layer}_reverse"][:D]:
                result[f"weight_ih{suffix}"] = (G, config["input_size"] if layer == 0 else D * out)
                result[f"weight_hh{suffix}"] = (G, out)
                if config.get("bias", True):
                    result.update({f"bias_ih{suffix}": (G,), f"bias_hh{suffix}": (G,)})
                if P:
                    result[f"weight_hr{suffix}"] = (P, H)
        return result
    return shapes


def _cell(gates: int) -> Callable[[dict], Shapes]:
    """RNNCell, LSTMCell, GRUCell: weight_ih (G, input_size), weight_hh (G, H), biases (G,)."""
    def shapes(config: dict) -> Shapes:
        G = gates * config["hidden_size"]
        result = {"weight_ih": (G, config["input_size"]), "weight_hh": (G, config["hidden_size"])}
        return {**result, "bias_ih": (G,), "bias_hh": (G,)} if config.get("bias", True) else result
    return shapes


SHAPES: dict[str, Callable[[dict], Shapes]] = {
    "minicompress.nn.Linear": lambda c: _with_bias(linear_weight_shape(c), c),
    "minicompress.nn.Conv1d": lambda c: _with_bias(conv_weight_shape(c), c),
    "minicompress.nn.Conv2d": lambda c: _with_bias(conv_weight_shape(c), c),
    "minicompress.nn.BatchNorm1d": _batch_norm,
    "minicompress.nn.BatchNorm2d": _batch_norm,
    "minicompress.nn.RNN": _recurrent(1),
    "minicompress.nn.LSTM": _recurrent(4),
    "minicompress.nn.GRU": _recurrent(3),
    "minicompress.nn.RNNCell": _cell(1),
    "minicompress.nn.LSTMCell": _cell(4),
    "minicompress.nn.GRUCell": _cell(3),
    "minicompress.quant.QuantizedLinear": _quantized(linear_weight_shape, static=True),
    "minicompress.quant.QuantizedLinearReLU": _quantized(linear_weight_shape, static=True),
    "minicompress.quant.QuantizedConv2d": _quantized(conv_weight_shape, static=True),
    "minicompress.quant.QuantizedConvReLU2d": _quantized(conv_weight_shape, static=True),
    "minicompress.quant.DynamicQuantizedLinear": _quantized(linear_weight_shape, static=False),
    "minicompress.quant.DynamicQuantizedLinearReLU": _quantized(linear_weight_shape, static=False),
}


def expected_shapes(class_name: str, config: dict[str, Any]) -> Shapes | None:
    """``{tensor: shape}`` for a listed class, or None (not listed, or a config too malformed to say:
    its constructor will refuse it)."""
    rule = SHAPES.get(class_name)
    if rule is None:
        return None
    try:
        shapes = rule(config)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    valid = all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for s in shapes.values() for d in s)
    return shapes if valid else None
