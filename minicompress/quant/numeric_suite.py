"""How much error does int8 add, layer by layer? ≙ ``torch.ao.ns._numeric_suite`` (eager mode).

The measure is PyTorch's ``compute_sqnr`` (``torch.ao.ns.fx.utils``; the numeric-suite tutorial's
``compute_error``): the signal-to-quantization-noise ratio of a float reference x and its quantized
counterpart y, in decibels,

    SQNR(x, y) = 20 log10( ||x|| / ||x - y|| )        ||.|| the Frobenius norm over every element      (1)

+inf when y == x; 20 dB is an error of 10 % of the signal, every 6.02 dB halves it (one more bit).

- :func:`compare_weights` pairs each int8 weight with its float weight (PyTorch's name matching);
- :func:`compare_model_outputs` logs the outputs of matching layers of the float and the quantized model on
  the same input: the error *propagated* from everything before each layer;
- :func:`layer_sensitivity` gives each quantized layer's *own* error, as PyTorch's ``compare_model_stub``
  (its ``Shadow`` module): the quantized layer runs inside the quantized model, its float twin gets the same
  (dequantized) input, and (1) compares the two outputs over all the batches,

      SQNR_layer = 20 log10( sqrt(sum_b ||f(x_b)||^2) / sqrt(sum_b ||f(x_b) - dq(g(q_b))||^2) )       (2)

  with g the int8 layer, q_b its input, x_b = dq(q_b), f the float layer -- (1) on the concatenated batches.
  The layers with the lowest SQNR are the ones to keep in float (``layer.qconfig = None``).
  (PyTorch's ``ShadowLogger`` keeps only ``x[0]`` of an output with ``len(x) > 1`` -- meant for tuples, it
  also cuts every batch to its first sample; on batches of one sample the two agree, see the tests.)
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..nn.grad_mode import no_grad
from ..nn.module import Module
from .mappings import DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS, DEFAULT_STATIC_QUANT_MODULE_MAPPINGS
from .modules import WeightedQuantized
from .qtensor import QTensor, dequantize

__all__ = ["compute_sqnr", "compare_weights", "compare_model_outputs", "layer_sensitivity"]


def _float(x: Any) -> np.ndarray:
    return dequantize(x) if isinstance(x, QTensor) else np.asarray(x)


def compute_sqnr(x: Any, y: Any) -> float:
    """Eq. (1), x the float reference, y the quantized value (QTensors are dequantized first, as PyTorch's
    decorator does); computed in float64. Shapes must be equal."""
    x, y = _float(x).astype(np.float64), _float(y).astype(np.float64)
    if x.shape != y.shape:
        raise ValueError(f"compute_sqnr: shapes differ, {x.shape} and {y.shape}")
    return _sqnr(float(np.sum(x * x)), float(np.sum((x - y) ** 2)))


def _sqnr(signal_sq: float, noise_sq: float) -> float:
    """20 log10(sqrt(signal_sq) / sqrt(noise_sq)) = 10 log10(signal_sq / noise_sq); +inf for zero noise."""
    if noise_sq == 0.0:
        return float("inf")
    if signal_sq == 0.0:
        return float("-inf")
    return float(10.0 * np.log10(signal_sq / noise_sq))


def _find_match(keys: Iterable[str], key: str, postfix: str) -> str | None:
    """PyTorch's ``_find_match``: the float key whose module path, with its last one or two components
    dropped and the dots removed, equals ``key``'s module path (``fc.weight`` <-> ``fc.weight``; a fused
    float ``conv1.0.weight`` <-> the quantized ``conv1.weight``)."""
    parts = key.split(".")
    if parts[-1] != postfix:
        return None
    target = "".join(parts[:-1])
    for other in keys:
        o = other.split(".")
        if target in ("".join(o[:-1]), "".join(o[:-2])):
            return other
    return None


def compare_weights(float_dict: dict[str, np.ndarray], quantized_dict: dict[str, np.ndarray]
                    ) -> dict[str, dict[str, Any]]:
    """``{key: {'float': float weight, 'quantized': QTensor}}`` for every int8 weight of ``quantized_dict``
    (a quantized model's ``state_dict()``: ``X.weight`` int8 with ``X.weight_scale``, ``X.weight_zero_point``),
    matched to ``float_dict`` by PyTorch's rule. ``compute_sqnr(d['float'], d['quantized'])`` is the weight's
    quantization error."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in quantized_dict.items():
        if not (key.endswith(".weight") or key == "weight") or np.asarray(value).dtype != np.int8:
            continue
        scale, zero_point = quantized_dict.get(key + "_scale"), quantized_dict.get(key + "_zero_point")
        match = _find_match(float_dict, key, "weight")
        if scale is None or zero_point is None or match is None:
            continue
        per_channel = np.ndim(scale) == 1
        q = QTensor(np.asarray(value), scale if per_channel else float(scale),
                    zero_point if per_channel else int(zero_point), 0 if per_channel else None, "qint8")
        out[key] = {"float": float_dict[match], "quantized": q}
    return out


def default_compare_output_types() -> tuple[type, ...]:
    """Every float and quantized type of the static and dynamic mappings (PyTorch's
    ``get_default_compare_output_module_list``)."""
    types: set[type] = set()
    for mapping in (DEFAULT_STATIC_QUANT_MODULE_MAPPINGS, DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS):
        types |= set(mapping)
        types |= {v for v in mapping.values() if isinstance(v, type)}
    return tuple(types)


def _log_outputs(model: Module, names: set[str], log: dict[str, list]) -> list:
    handles = []
    for name, m in model.named_modules():
        if name in names:
            def hook(module: Module, inputs: tuple, output: Any, _name: str = name) -> None:
                log[_name].append(_float(output[0] if isinstance(output, tuple) else output).copy())
            handles.append(m.register_forward_hook(hook))
    return handles


def compare_model_outputs(float_model: Module, q_model: Module, *data: Any,
                          allow_list: Iterable[type] | None = None) -> dict[str, dict[str, list[np.ndarray]]]:
    """``{name: {'float': [outputs], 'quantized': [outputs]}}`` of the layers (types in ``allow_list``, default
    every type of the quantization mappings) found under the same name in both models, after running
    ``float_model(*data)`` and ``q_model(*data)``; quantized outputs dequantized. ≙ PyTorch's
    ``compare_model_outputs`` (keys without its ``.stats`` suffix). Hooks are removed afterwards."""
    types = tuple(default_compare_output_types() if allow_list is None else allow_list)
    floats = {n for n, m in float_model.named_modules() if n and isinstance(m, types)}
    names = {n for n, m in q_model.named_modules() if n in floats and isinstance(m, types)}
    logs: dict[str, dict[str, list]] = {n: {"float": [], "quantized": []} for n in names}
    flog, qlog = {n: logs[n]["float"] for n in names}, {n: logs[n]["quantized"] for n in names}
    handles = _log_outputs(float_model, names, flog) + _log_outputs(q_model, names, qlog)
    try:
        with no_grad():
            float_model(*data)
            q_model(*data)
    finally:
        for h in handles:
            h.remove()
    return {n: logs[n] for n in sorted(names) if logs[n]["quantized"]}


def _float_twin(q_mod: Module, f_mod: Module | None, name: str) -> Module:
    """The float layer that ``convert`` / ``quantize_dynamic`` turned into ``q_mod`` (checked by type)."""
    mappings = (DEFAULT_STATIC_QUANT_MODULE_MAPPINGS, DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS)
    targets = [m.get(type(f_mod)) for m in mappings]
    if f_mod is None or type(q_mod) not in targets:
        got = "nothing" if f_mod is None else type(f_mod).__name__
        raise ValueError(f"layer_sensitivity: the float model has {got} at {name!r}, which does not convert to "
                         f"{type(q_mod).__name__}; pass the float model that was prepared (fused, wrapped), "
                         f"before prepare()")
    return f_mod


def layer_sensitivity(float_model: Module, quantized_model: Module, batches: Iterable[Any]) -> dict[str, float]:
    """Eq. (2) for every int8 weighted layer (static or dynamic Linear / Conv2d, fused or not) of
    ``quantized_model``: ``{layer name: SQNR in dB}``, lowest first.

    ``float_model`` is the float model as it was given to ``prepare`` (fused, with QuantWrappers) or to
    ``quantize_dynamic``; layers are matched by name. ``batches``: model inputs (arrays, or tuples of
    arguments), e.g. calibration batches.
    """
    modules = dict(float_model.named_modules())
    layers = {name: (m, _float_twin(m, modules.get(name), name))
              for name, m in quantized_model.named_modules() if isinstance(m, WeightedQuantized)}
    if not layers:
        raise ValueError("layer_sensitivity: the quantized model has no int8 weighted layers")
    sums = {name: [0.0, 0.0] for name in layers}

    def shadow(module: Module, inputs: tuple, output: Any, _name: str) -> None:
        reference = np.asarray(layers[_name][1](*(_float(x) for x in inputs)), np.float64)
        noise = reference - _float(output).astype(np.float64)
        sums[_name][0] += float(np.sum(reference * reference))
        sums[_name][1] += float(np.sum(noise * noise))

    handles = [m.register_forward_hook(lambda mod, i, o, _n=name: shadow(mod, i, o, _n))
               for name, (m, _) in layers.items()]
    try:
        with no_grad():
            for batch in batches:
                quantized_model(*(batch if isinstance(batch, tuple) else (batch,)))
    finally:
        for h in handles:
            h.remove()
    result = {name: _sqnr(*sums[name]) for name in layers}
    return dict(sorted(result.items(), key=lambda kv: kv[1]))
