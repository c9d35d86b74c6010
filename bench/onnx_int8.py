"""Our int8 digits CNN vs onnxruntime running the file ``io.export_onnx`` wrote for it, one thread each.

The digits CNN (``models.digits_cnn``) is trained for a few epochs, made static int8 (fuse, x86 qconfig,
calibrate, convert) and exported as float, QOperator and QDQ ONNX files. Rows: batch 1 and 64 latency
(best and median of interleaved rounds) of our float and int8 models and of onnxruntime 1.32 (CPU
provider, ``intra_op_num_threads=1``, all graph optimisations) on each file; ratios against our int8 model
in the same run; test accuracy of each, and the share of test predictions that agree with our int8 model.

    NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/onnx_int8.py [--epochs 4] [--rounds 5]

Prints a table, then one JSON line.
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from minicompress import models, nn, quant  # noqa: E402
from minicompress.data import DataLoader, load_digits  # noqa: E402
from minicompress.io import export_onnx  # noqa: E402
from minicompress.optim import Adam  # noqa: E402
from minicompress.train import fit  # noqa: E402

FUSION = [["1", "2", "3"], ["4", "5", "6"], ["9", "10"]]


def trained_cnn(x, y, epochs: int) -> nn.Module:
    nn.manual_seed(0)
    model = models.digits_cnn()
    fit(model, nn.CrossEntropyLoss(), Adam(model.parameters(), lr=3e-3),
        DataLoader(x, y, 64, shuffle=True, rng=np.random.default_rng(0)), epochs=epochs, quiet=True)
    return model.eval()


def static_int8(model: nn.Module, calibration: np.ndarray) -> nn.Module:
    wrapped = quant.fuse_modules(nn.Sequential(quant.QuantStub(), *model.children(), quant.DeQuantStub()).eval(),
                                 FUSION)
    wrapped.qconfig = quant.get_default_qconfig("x86")
    prepared = quant.prepare(wrapped)
    with nn.no_grad():
        prepared(calibration)
    return quant.convert(prepared)


def ort_session(path: str):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"input": x})[0]


def timings(runners: dict, x: np.ndarray, rounds: int, budget: float = 0.2) -> dict:
    """{name: [seconds per call, best of each round]}, rounds interleaved across runners."""
    out = {name: [] for name in runners}
    for name, run in runners.items():
        run(x)                                           # warm-up (Numba compilation, ORT first run)
    for _ in range(rounds):
        for name, run in runners.items():
            best, t_end = np.inf, time.perf_counter() + budget
            while time.perf_counter() < t_end:
                t0 = time.perf_counter()
                run(x)
                best = min(best, time.perf_counter() - t0)
            out[name].append(best)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    import onnxruntime
    x_train, y_train, x_test, y_test = load_digits()
    model = trained_cnn(x_train, y_train, args.epochs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = static_int8(model, x_train[:256])
    tmp = tempfile.mkdtemp()
    paths = {}
    for name, m, fmt in (("float", model, "qdq"), ("qoperator", int8, "qoperator"), ("qdq", int8, "qdq")):
        paths[name] = os.path.join(tmp, f"{name}.onnx")
        export_onnx(m, paths[name], x_test[:4], int8_format=fmt)

    def ours(m):
        def run(x):
            with nn.no_grad():
                return m(x)
        return run

    runners = {"minicompress float": ours(model), "minicompress int8": ours(int8),
               "onnxruntime float": ort_session(paths["float"]),
               "onnxruntime int8 QOperator": ort_session(paths["qoperator"]),
               "onnxruntime int8 QDQ (fused)": ort_session(paths["qdq"])}
    reference = runners["minicompress int8"](x_test).argmax(1)
    quality = {name: (float((run(x_test).argmax(1) == y_test).mean()), float((run(x_test).argmax(1) == reference).mean()))
               for name, run in runners.items()}
    results = {}
    for batch in (1, 64):
        xb = x_test[:batch]
        t = timings(runners, xb, args.rounds)
        base = min(t["minicompress int8"])
        results[batch] = {name: {"best_ms": 1e3 * min(v), "median_ms": 1e3 * float(np.median(v)),
                                 "vs_minicompress_int8": min(v) / base} for name, v in t.items()}
    print(f"digits CNN {args.epochs} epochs; 1 thread each; onnxruntime {onnxruntime.__version__}, ORT_ENABLE_ALL")
    print(f"{'':32s} {'batch 1 ms (best/median)':>26s} {'ratio':>6s} {'batch 64 ms (best/median)':>27s} {'ratio':>6s}"
          f" {'accuracy':>9s} {'agrees':>7s}")
    for name in runners:
        r1, r64 = results[1][name], results[64][name]
        acc, agree = quality[name]
        print(f"{name:32s} {r1['best_ms']:12.3f} / {r1['median_ms']:8.3f}   {r1['vs_minicompress_int8']:6.2f} "
              f"{r64['best_ms']:13.3f} / {r64['median_ms']:8.3f}   {r64['vs_minicompress_int8']:6.2f} "
              f"{acc:9.4f} {agree:7.4f}")
    print(json.dumps({"bench": "onnx_int8", "epochs": args.epochs, "results": results,
                      "accuracy_agreement": quality}))


if __name__ == "__main__":
    main()
