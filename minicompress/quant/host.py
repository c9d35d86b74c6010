"""What the frameworks' int8 kernels compute on this CPU: exact int32 sums, or int16 pair sums that saturate.

fbgemm (PyTorch's x86 engine) and MLAS (onnxruntime's) multiply uint8 activations by int8 weights four bytes
at a time. With AVX-512 VNNI, ``vpdpbusd`` adds the four products into an int32 lane exactly. Without it
(AVX2, or AVX-512 without VNNI) both use ``vpmaddubsw``, which adds each two neighbouring products into a
*saturating* int16, then ``vpmaddwd`` sums those exactly::

    acc = sum_p sat16(a_2p b_2p + a_2p+1 b_2p+1)        raw codes, pairs along the reduction axis    (P)

(P) equals the exact sum unless a pair leaves [-32768, 32767], which needs an activation code above 128
next to a large weight: PyTorch's ``reduce_range`` (codes 0..127) avoids it, full-range uint8 activations
do not. So the same model gives different codes on different CPUs, in PyTorch and in onnxruntime; this
library computes what the framework computes on the CPU it runs on, and warns when (P) changed a sum
(``functional.Int16SaturationWarning``). MLAS also has AVX-VNNI (VEX-encoded) kernels; fbgemm does not.
"""
from __future__ import annotations

from llvmlite import binding as llvm_binding


def _host_features() -> dict:
    try:
        return dict(llvm_binding.get_host_cpu_features())
    except Exception:      # unknown host: no feature is assumed
        return {}


FEATURES = _host_features()
CPU_NAME = llvm_binding.get_host_cpu_name()         # LLVM's name of the micro-architecture (e.g. znver3)
HAS_AVX512_VNNI = all(FEATURES.get(f, False) for f in ("avx512f", "avx512bw", "avx512vnni"))
HAS_AVX_VNNI = bool(FEATURES.get("avxvnni", False))

FBGEMM_INT16_PAIRS = not HAS_AVX512_VNNI
"""Whether PyTorch's fbgemm sums u8 x s8 products in saturating int16 pairs (P) in its dense kernels (GEMM,
im2col, pointwise and groupwise convolutions) on this CPU. Its depthwise fast path does so on every CPU."""

MLAS_INT16_PAIRS = not (HAS_AVX512_VNNI or HAS_AVX_VNNI)
"""Whether onnxruntime's MLAS sums u8 x s8 products in saturating int16 pairs (P) on this CPU."""
