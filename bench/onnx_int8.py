"""Our int8 and float inference next to onnxruntime running the files ``io.export_onnx`` wrote, one thread each.

Models: the digits CNN (``models.digits_cnn``, trained ``--epochs``), and with ``--arch`` ResNet-20 and
MobileNetV2 w0.5 (``bench/digits_training.py``'s recipe, ``--arch-epochs``, cached). Each is made static int8
(fuse, x86 qconfig, 256 calibration images, convert) and exported as float, QOperator and QDQ ONNX files.
Rows, at batch 1 and 64 (best and median of interleaved rounds): our float and int8 models called as modules,
the same as frozen plans (``inference.freeze``), onnxruntime 1.32 (CPU provider, ``intra_op_num_threads=1``, all
graph optimisations) on each file, and our int8 plan timed right after an onnxruntime session with its default
thread pool has run in the same process (issue 17: spinning pool threads used to slow small parallel kernels
80x). Ratios against our int8 plan in the same run; test accuracy of each, and the share of test predictions
that agree with our int8 model.

    NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/onnx_int8.py [--epochs 4] [--rounds 5] [--arch]

Prints a table per model, then one JSON line.
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from minicompress import inference, models, nn, quant  # noqa: E402
from minicompress.data import DataLoader, load_digits  # noqa: E402
from minicompress.io import export_onnx  # noqa: E402
from minicompress.optim import Adam  # noqa: E402
from minicompress.train import fit  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

FUSION = [["1", "2", "3"], ["4", "5", "6"], ["9", "10"]]
BASELINE = "minicompress int8 (freeze)"


def trained_cnn(x, y, epochs: int) -> nn.Module:
    nn.manual_seed(0)
    model = models.digits_cnn()
    fit(model, nn.CrossEntropyLoss(), Adam(model.parameters(), lr=3e-3),
        DataLoader(x, y, 64, shuffle=True, rng=np.random.default_rng(0)), epochs=epochs, quiet=True)
    return model.eval()


def static_int8(model: nn.Module, calibration: np.ndarray) -> nn.Module:
    """The digits CNN wrapped in QuantStub / DeQuantStub, fused, x86 qconfig, calibrated, converted."""
    wrapped = quant.fuse_modules(nn.Sequential(quant.QuantStub(), *model.children(), quant.DeQuantStub()).eval(),
                                 FUSION)
    return _convert(wrapped, calibration)


def arch_int8(model: nn.Module, calibration: np.ndarray) -> nn.Module:
    """A quantizable architecture: ``fuse_model()``, x86 qconfig, calibrated, converted."""
    fused = copy.deepcopy(model).eval()
    fused.fuse_model()
    return _convert(fused, calibration)


def _convert(model: nn.Module, calibration: np.ndarray) -> nn.Module:
    model.qconfig = quant.get_default_qconfig("x86")
    prepared = quant.prepare(model)
    with nn.no_grad():
        for i in range(0, len(calibration), 64):
            prepared(calibration[i:i + 64])
    return quant.convert(prepared)


def ort_session(path: str, threads: int = 1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def timings(runners: dict, x: np.ndarray, rounds: int, budget: float = 0.2) -> dict:
    """{name: [seconds per call, best of each round]}, rounds interleaved across runners."""
    out = {name: [] for name in runners}
    for name, run in runners.items():
        run(x)                                           # warm-up (Numba compilation, ORT first run, plan build)
    for _ in range(rounds):
        for name, run in runners.items():
            best, t_end = np.inf, time.perf_counter() + budget
            while time.perf_counter() < t_end:
                t0 = time.perf_counter()
                run(x)
                best = min(best, time.perf_counter() - t0)
            out[name].append(best)
    return out


def after_ort_pool(ours, ort_pool, x: np.ndarray, rounds: int, calls: int = 200) -> list:
    """Best time of ``ours`` on calls that each follow an onnxruntime call with its default thread pool."""
    ort_pool(x)
    out = []
    for _ in range(rounds):
        best = np.inf
        for _ in range(calls):
            ort_pool(x)
            t0 = time.perf_counter()
            ours(x)
            best = min(best, time.perf_counter() - t0)
        out.append(best)
    return out


def bench_model(name: str, model: nn.Module, int8: nn.Module, data: tuple, rounds: int) -> dict:
    x_test, y_test = data
    tmp = tempfile.mkdtemp()
    paths = {}
    for kind, m, fmt in (("float", model, "qdq"), ("qoperator", int8, "qoperator"), ("qdq", int8, "qdq")):
        paths[kind] = os.path.join(tmp, f"{kind}.onnx")
        export_onnx(m, paths[kind], x_test[:4], int8_format=fmt)

    def call(m):
        def run(x):
            with nn.no_grad():
                return m(x)
        return run

    runners = {"minicompress float": call(model), "minicompress float (freeze)": inference.freeze(model),
               "minicompress int8": call(int8), BASELINE: inference.freeze(int8),
               "onnxruntime float": ort_session(paths["float"]),
               "onnxruntime int8 QOperator": ort_session(paths["qoperator"]),
               "onnxruntime int8 QDQ (fused)": ort_session(paths["qdq"])}
    pool = ort_session(paths["qoperator"], threads=0)         # onnxruntime's default intra-op pool
    reference = runners["minicompress int8"](x_test).argmax(1)
    quality = {}
    for kind, run in runners.items():
        pred = np.concatenate([run(x_test[i:i + 64]) for i in range(0, len(x_test), 64)]).argmax(1)
        quality[kind] = (float((pred == y_test).mean()), float((pred == reference).mean()))
    results = {}
    for batch in (1, 64):
        xb = np.ascontiguousarray(x_test[:batch])
        t = timings(runners, xb, rounds)
        t["minicompress int8 (freeze) after onnxruntime's pool"] = after_ort_pool(runners[BASELINE], pool, xb, rounds)
        base = min(t[BASELINE])
        results[batch] = {kind: {"best_ms": 1e3 * min(v), "median_ms": 1e3 * float(np.median(v)),
                                 "vs_minicompress_int8_freeze": min(v) / base} for kind, v in t.items()}
    print(f"\n{name}: 1 thread each (onnxruntime's pool row: its default threads); ORT_ENABLE_ALL")
    print(f"{'':52s} {'batch 1 ms (best/median)':>26s} {'ratio':>6s} {'batch 64 ms (best/median)':>27s} "
          f"{'ratio':>6s} {'accuracy':>9s} {'agrees':>7s}")
    for kind in results[1]:
        r1, r64 = results[1][kind], results[64][kind]
        acc, agree = quality.get(kind, quality[BASELINE])
        print(f"{kind:52s} {r1['best_ms']:12.3f} / {r1['median_ms']:8.3f}   {r1['vs_minicompress_int8_freeze']:6.2f} "
              f"{r64['best_ms']:13.3f} / {r64['median_ms']:8.3f}   {r64['vs_minicompress_int8_freeze']:6.2f} "
              f"{acc:9.4f} {agree:7.4f}")
    return {"results": results, "accuracy_agreement": quality}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--arch", action="store_true", help="also ResNet-20 and MobileNetV2 w0.5")
    p.add_argument("--arch-epochs", type=int, default=3)
    args = p.parse_args()
    import onnxruntime
    print(f"onnxruntime {onnxruntime.__version__}")
    x_train, y_train, x_test, y_test = load_digits()
    out = {"bench": "onnx_int8", "epochs": args.epochs}
    model = trained_cnn(x_train, y_train, args.epochs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = static_int8(model, x_train[:256])
    out["digits_cnn"] = bench_model("digits CNN", model, int8, (x_test, y_test), args.rounds)
    if args.arch:
        from digits_training import trained
        for name in ("resnet20", "mobilenet_v2_w0.5"):
            model = trained(name, 0, args.arch_epochs, (x_train, y_train, x_test, y_test))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                int8 = arch_int8(model, x_train[:256])
            out[name] = bench_model(f"{name} ({args.arch_epochs} epochs)", model, int8, (x_test, y_test),
                                    args.rounds)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
