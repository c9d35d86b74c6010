"""Named rounding modes: where the float roundings fall when a real number becomes an integer code.

Every quantizer computes, in words, ``q = clamp(round(x / s) + z, qmin, qmax)``. Libraries differ in
exactly *where* the float32 roundings happen, and at exact half-way inputs (``x / s = k + 0.5``)
that decides the integer. With ``inv = fl32(1 / fl32(s))`` (FBGEMM multiplies by the float32
reciprocal instead of dividing) the rules are::

    (R1) FMA             q = rint(fl32(x * inv + z))          one rounding of the exact x*inv + z
    (R2) MUL_ADD         q = rint(fl32(fl32(x * inv) + z))    two roundings, zp before rint
    (R3) MUL_ROUND_ADD   q = rint(fl32(x * inv)) + z          zp after rint
    (R4) DIV_HALF_EVEN   q = rint(fl32(x / s)) + z            true division, ties to even
    (R5) DIV_HALF_AWAY   q = round_half_away(fl32(x / s)) + z true division, ties away from zero

``rint`` rounds half to even. The codes are then clamped to ``[qmin, qmax]``; +-inf saturate.

Named modes (what each library computes on x86-64):

- ``'pytorch-2.13'`` (default): torch 2.13.0 with FBGEMM's "LEGACY" quantize path.
  ``quantize_per_tensor`` to qint8/quint8 runs the AVX2 ``_mm256_fmadd_ps`` kernel -> (R1);
  ``quantize_per_tensor`` to qint32 and ``quantize_per_channel`` run the scalar
  ``nearbyint(zero_point + src * inv_scale)`` -> (R2). Measured: 0 mismatches on adversarial
  half-way inputs for each, thousands for the other rules. ``quantize_per_tensor`` to quint4x2 runs
  ``quantize_tensor_per_tensor_affine_sub_byte_cpu``: ``lrintf(nearbyint(x * inv) + zp)`` -> (R3)
  (0 mismatches / 12 800 half-way inputs; 1 512 for (R2)).
- ``'fake-quant'``: ``fake_quantize_per_{tensor,channel}_affine`` -> (R3). This is also what FBGEMM
  computes after commit 798a6037a (2026-04-13, "Remove legacy quantize path").
- ``'onnx'``: ONNX ``QuantizeLinear``: ``saturate(round_half_even(x / y_scale) + zp)`` -> (R4).
- ``'onnxruntime'``: onnxruntime 1.32's CPU QuantizeLinear (MLAS), measured: (R4) as the spec says -- a true
  float32 division, not a multiply by the reciprocal (NaN -> qmin there; ``quant.onnxruntime_ops``).
- ``'tflite'``: TFLite ``AffineQuantize``: ``TfLiteRound(x / scale) + zp`` (std::round) -> (R5).
"""
from __future__ import annotations

from typing import NamedTuple

FMA, MUL_ADD, MUL_ROUND_ADD, DIV_HALF_EVEN, DIV_HALF_AWAY = 0, 1, 2, 3, 4
RULE_NAMES = {FMA: "fma", MUL_ADD: "mul-add", MUL_ROUND_ADD: "mul-round-add",
              DIV_HALF_EVEN: "div-half-even", DIV_HALF_AWAY: "div-half-away"}


class RoundingMode(NamedTuple):
    """Which rule (R1-R5) a library applies for each kind of quantization."""

    per_tensor: int         # qint8 / quint8, one scale
    per_tensor_int32: int   # qint32, one scale
    per_channel: int        # any dtype, one scale per channel
    per_tensor_4bit: int    # quint4x2, one scale (PyTorch's sub-byte loop)


MODES: dict[str, RoundingMode] = {
    "pytorch-2.13": RoundingMode(FMA, MUL_ADD, MUL_ADD, MUL_ROUND_ADD),
    "fake-quant": RoundingMode(MUL_ROUND_ADD, MUL_ROUND_ADD, MUL_ROUND_ADD, MUL_ROUND_ADD),
    "onnx": RoundingMode(DIV_HALF_EVEN, DIV_HALF_EVEN, DIV_HALF_EVEN, DIV_HALF_EVEN),
    "onnxruntime": RoundingMode(DIV_HALF_EVEN, DIV_HALF_EVEN, DIV_HALF_EVEN, DIV_HALF_EVEN),
    "tflite": RoundingMode(DIV_HALF_AWAY, DIV_HALF_AWAY, DIV_HALF_AWAY, DIV_HALF_AWAY),
}
DEFAULT_MODE = "pytorch-2.13"


def get_mode(name: str) -> RoundingMode:
    """The :class:`RoundingMode` called ``name`` (one of ``MODES``)."""
    try:
        return MODES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown rounding mode {name!r}; expected one of {sorted(MODES)}") from None


def rule_for(mode: str, dtype: str, per_channel: bool) -> int:
    """The rule code a ``mode`` applies to a per-tensor or per-channel quantization to ``dtype``."""
    m = get_mode(mode)
    if per_channel:
        return m.per_channel
    if dtype == "quint4x2":
        return m.per_tensor_4bit
    return m.per_tensor_int32 if dtype == "qint32" else m.per_tensor
