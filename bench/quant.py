"""Is the int8 GEMM worth running? int8 kernel vs NumPy float32 matmul vs PyTorch's fbgemm, same threads.

Part 1, GEMM shapes M x K x N: our u8 x s8 -> int32 kernel (``gemm.gemm_s32``), our full static
quantized linear (GEMM + requantisation to uint8, ``functional.linear``), NumPy float32 ``x @ W^T``
(OpenBLAS) and ``torch.ops.quantized.linear`` (fbgemm, uint8 out). Throughput in G(FL)OPS = 2MKN / time
(best of several runs); ratios are against NumPy float32 in the same run.

Part 2, the digits CNN (``models.digits_cnn``) trained for a few epochs: test accuracy and batch
latency of the float model, the static int8 model (fuse, x86 qconfig, calibrate, convert) and -- for
the MLP -- dynamic int8.

    /tmp/venv/bin/python bench/quant.py                # all cores
    /tmp/venv/bin/python bench/quant.py --threads 1

Prints a table, then one JSON line.
"""
from __future__ import annotations

import os
import sys


def _early_threads() -> int:
    """--threads must reach OpenBLAS before NumPy is imported."""
    n = os.cpu_count() or 1
    if "--threads" in sys.argv:
        n = int(sys.argv[sys.argv.index("--threads") + 1])
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)
    return n


THREADS = _early_threads()

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from minicompress import models, nn, no_grad  # noqa: E402
from minicompress import quant as Q  # noqa: E402
from minicompress.data import DataLoader, load_digits  # noqa: E402
from minicompress.optim import Adam  # noqa: E402
from minicompress.quant import functional as QF  # noqa: E402
from minicompress.quant import avx2, gemm, host, vnni  # noqa: E402
from minicompress.train import evaluate, fit  # noqa: E402

SHAPES = [(64, 512, 512), (128, 512, 512), (64, 784, 512), (256, 1024, 1024), (1024, 1024, 1024)]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=THREADS)
    p.add_argument("--epochs", type=int, default=6, help="digits CNN / MLP training epochs")
    p.add_argument("--budget", type=float, default=0.3, help="seconds of timed runs per measurement")
    return p.parse_args()


def _quiet(fn, *args):
    """fn(*args) without the Int16SaturationWarning a full-range row raises on every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QF.Int16SaturationWarning)
        return fn(*args)


def best_time(fn, budget: float) -> float:
    """Minimum wall time of fn() over repeated runs (after one warm-up), within ~budget seconds."""
    fn()
    best, spent, runs = float("inf"), 0.0, 0
    while runs < 3 or (spent < budget and runs < 200):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, runs = min(best, dt), spent + dt, runs + 1
    return best


def gemm_row(torch, m: int, k: int, n: int, budget: float, per_channel: bool = False,
             full_range: bool = False) -> dict:
    """One shape: NumPy float32, our int8 GEMM and static linear, fbgemm's static linear (per-channel
    weights when ``per_channel``: scales max|w_j| / 127.5, zero points 0, as PyTorch's x86 qconfig).
    Activations x ~ N(0, 1) take codes 0..127 (scale 0.06, zero point 64), as the x86 qconfig's reduce_range
    gives them; ``full_range``: 0..255 (scale 0.03, zero point 128), where a CPU without VNNI sums int16 pairs
    that saturate (``quant/host.py``) and our kernels also count what that changed, for the warning."""
    x_scale, x_zp = (0.03, 128) if full_range else (0.06, 64)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(m, k)).astype(np.float32)
    w = (rng.normal(size=(n, k)) * 0.05).astype(np.float32)
    wt = np.ascontiguousarray(w.T)
    if per_channel:
        scales = np.abs(w).max(axis=1).astype(np.float64) / 127.5
        qw = Q.quantize_per_channel(w, scales, np.zeros(n, np.int64), 0, "qint8")
    else:
        qw = Q.quantize_per_tensor(w, float(np.abs(w).max() / 127.5), 0, "qint8")
    qx = Q.quantize_per_tensor(x, x_scale, x_zp, "quint8")
    packed = QF.pack_weight(qw)
    acc = np.empty((m, n), np.int32)
    times = {
        "numpy_f32": best_time(lambda: x @ wt, budget),
        "int8_gemm": best_time(lambda: gemm.gemm_s32(qx.int_repr, packed.codes, packed.vnni, False, acc), budget),
        "int8_linear": best_time(lambda: _quiet(QF.linear, qx, packed, None, 0.1, 64), budget),
    }
    if torch is not None:
        tw = (torch.quantize_per_channel(torch.from_numpy(w), torch.from_numpy(qw.scale), torch.zeros(n, dtype=torch.long),
                                         0, torch.qint8) if per_channel
              else torch.quantize_per_tensor(torch.from_numpy(w), qw.scale, 0, torch.qint8))
        tp = torch.ops.quantized.linear_prepack(tw, None)
        tx = torch.quantize_per_tensor(torch.from_numpy(x), x_scale, x_zp, torch.quint8)
        times["fbgemm_linear"] = best_time(lambda: torch.ops.quantized.linear(tx, tp, 0.1, 64), budget)
    ops = 2.0 * m * k * n
    row = {"shape": f"{m}x{k}x{n}" + (" pc" if per_channel else "") + (" 0..255" if full_range else ""), **{f"{key}_ms": t * 1e3 for key, t in times.items()},
           **{f"{key}_gops": ops / t / 1e9 for key, t in times.items()}}
    row.update({f"{key}_vs_numpy": times["numpy_f32"] / t for key, t in times.items() if key != "numpy_f32"})
    return row


def digits_rows(args: argparse.Namespace) -> list[dict]:
    xtr, ytr, xte, yte = load_digits()
    rows = []
    cnn = models.digits_cnn(rng=np.random.default_rng(0))
    model = nn.Sequential(Q.QuantStub(), *cnn, Q.DeQuantStub())
    fit(model, nn.CrossEntropyLoss(), Adam(model.parameters(), lr=3e-3),
        DataLoader(xtr, ytr, 64, shuffle=True, rng=1), epochs=args.epochs, quiet=True)
    model.eval()
    fused = Q.fuse_modules(model, [["1", "2", "3"], ["4", "5", "6"], ["9", "10"]])
    fused.qconfig = Q.get_default_qconfig("x86")
    prepared = Q.prepare(fused)
    with no_grad():
        prepared(xtr)
    rows += _compare("digits CNN", model, {"static int8": Q.convert(prepared)}, xte, yte, args.budget)

    mlp = models.digits_mlp((128,), rng=np.random.default_rng(0))
    fit(mlp, nn.CrossEntropyLoss(), Adam(mlp.parameters(), lr=3e-3),
        DataLoader(xtr, ytr, 64, shuffle=True, rng=1), epochs=args.epochs, quiet=True)
    mlp.eval()
    rows += _compare("digits MLP", mlp, {"dynamic int8": Q.quantize_dynamic(mlp, {nn.Linear})}, xte, yte,
                     args.budget)

    # Where dynamic int8 is meant to pay: wide Linear layers (bench/engine.py's MLP, batch 128).
    # Random weights and inputs, so the "accuracy" is top-1 agreement with the float model.
    wide = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)).eval()
    x = np.random.default_rng(1).standard_normal((128, 784)).astype(np.float32)
    with no_grad():
        agree = wide(x).argmax(1)
    rows += _compare("MLP 784-512-256-10", wide, {"dynamic int8": Q.quantize_dynamic(wide, {nn.Linear})}, x, agree,
                     args.budget)
    return rows


def _compare(name: str, float_model, quantized: dict, x, y, budget: float) -> list[dict]:
    out = []
    with no_grad():
        base_t = best_time(lambda: float_model(x), budget)
        base_acc = evaluate(float_model, x, y)["accuracy"]
        out.append({"model": name, "variant": "float32", "accuracy": base_acc, "latency_ms": base_t * 1e3,
                    "speedup": 1.0})
        for variant, qm in quantized.items():
            t = best_time(lambda: qm(x), budget)
            out.append({"model": name, "variant": variant, "accuracy": evaluate(qm, x, y)["accuracy"],
                        "latency_ms": t * 1e3, "speedup": base_t / t})
    return out


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore")
    try:
        import torch
        torch.set_num_threads(args.threads)
        torch.backends.quantized.engine = "fbgemm"
    except ImportError:
        torch = None
    import numba
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    print(f"threads={args.threads}  vnni={vnni.USE_VNNI}  avx2={avx2.USE_AVX2}  fbgemm int16 pairs="
          f"{host.FBGEMM_INT16_PAIRS}  numpy float32 = OpenBLAS sgemm; "
          f"G(FL)OPS = 2MKN/time, best of runs\n")
    gemms = [gemm_row(torch, m, k, n, args.budget) for m, k, n in SHAPES]
    gemms.append(gemm_row(torch, 256, 1024, 1024, args.budget, per_channel=True))
    gemms.append(gemm_row(torch, 256, 1024, 1024, args.budget, full_range=True))
    print(f"{'M x K x N':>16} | {'numpy f32':>14} | {'int8 GEMM':>20} | {'int8 linear (+requant)':>24} | "
          f"{'fbgemm linear':>20}")
    for r in gemms:
        fb = (f"{r['fbgemm_linear_gops']:7.1f} GOPS {r['fbgemm_linear_vs_numpy']:5.2f}x"
              if "fbgemm_linear_gops" in r else "n/a")
        print(f"{r['shape']:>16} | {r['numpy_f32_gops']:8.1f} GFLOPS | {r['int8_gemm_gops']:7.1f} GOPS "
              f"{r['int8_gemm_vs_numpy']:5.2f}x | {r['int8_linear_gops']:11.1f} GOPS "
              f"{r['int8_linear_vs_numpy']:5.2f}x | {fb}")
    digits = digits_rows(args)
    print(f"\n{'model':>18} {'variant':>14} {'accuracy':>9} {'latency per batch':>18} {'speedup':>8}"
          "   (digits: the 359 test images; MLP 784: batch 128, accuracy = agreement with float)")
    for r in digits:
        print(f"{r['model']:>18} {r['variant']:>14} {r['accuracy']:9.4f} {r['latency_ms']:15.3f} ms "
              f"{r['speedup']:7.2f}x")
    print(json.dumps({"bench": "quant", "threads": args.threads, "vnni": vnni.USE_VNNI, "avx2": avx2.USE_AVX2,
                      "cpu": host.CPU_NAME, "gemm": gemms,
                      "digits": digits}))


if __name__ == "__main__":
    main()
