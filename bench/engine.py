"""How fast is the NumPy engine next to PyTorch eager, on the same threads?

Three models, same weights in both libraries (loaded through ``state_dict``):
  MLP  784-512-256-10 (ReLU), batch 128, input (128, 784)
  CNN  [conv3x3(pad 1)-ReLU-maxpool2] x 2 (1->16->32 channels), flatten, linear 1568->10,
       batch 64, input (64, 1, 28, 28)
  ResNet-20 (CIFAR-style: 3x3 stem, 3 stages x 3 BasicBlocks of 16/32/64 channels), digits-sized
       input (64, 1, 8, 8); PyTorch runs the twin of torchvision's blocks from tests/models/torch_twins.py
  ViT (patch 2, 4 layers, 4 heads, width 64, MLP 128) on (64, 1, 8, 8): 17 tokens; torchvision's twin
Measured: inference (no_grad / eval) and one training step = forward + cross-entropy + backward + SGD
update (lr 0.01, momentum 0.9). PyTorch does not compute d loss / d input for a data tensor that does
not require grad; minicompress skips it the way ``train.fit`` does, with ``model.backward_params``
(the row "... + d input" calls ``model.backward`` and so computes it anyway).

The MLP and CNN train steps also have a **NumPy floor**: the same step written as bare NumPy, with the
same GEMMs and the same im2col formulation of the convolution (``numpy_floor_*`` below), in-place
elementwise work and the same SGD-momentum update, without any engine (no Modules, caches, checks or
hooks). "vs floor" is minicompress / floor: what the engine adds over its own arithmetic.

Each number is the fastest time per call over interleaved rounds (minicompress, PyTorch, minicompress,
...) of ~0.1 s each: the minimum is the least disturbed by other processes on a shared machine (the
median is printed too). Prints a table and one JSON line of ratios minicompress / PyTorch (lower is
better), from the minima.

    python bench/engine.py [--threads N] [--seconds S] [--rounds R] [--models mlp cnn resnet20 vit]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable


MODELS = ["mlp", "cnn", "resnet20", "vit"]


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="BLAS / PyTorch threads (default: NumPy's)")
    parser.add_argument("--seconds", type=float, default=0.1, help="length of one timing round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per measurement")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=MODELS, help="models to run (default: all)")
    return parser.parse_args()


ARGS = _parse()
try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:  # fall back to environment variables, read by the BLAS when numpy loads
    threadpool_limits = threadpool_info = None
    if ARGS.threads is not None:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import minicompress as mc  # noqa: E402
from minicompress import models, nn, optim  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "models"))
from torch_twins import resnet_twin, vit_twin  # noqa: E402  (PyTorch twins of torchvision's modules)
from minicompress.nn.losses import CrossEntropyLoss  # noqa: E402


def blas_threads() -> int:
    if threadpool_info is None:
        return int(os.environ.get("OPENBLAS_NUM_THREADS", os.cpu_count() or 1))
    blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    return blas[0] if blas else 1


def timed_rounds(fns: dict[str, Callable[[], object]], seconds: float, rounds: int) -> dict[str, tuple[float, float]]:
    """(min, median) seconds per call of each fn, measured in interleaved rounds after a warm-up."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        for _ in range(3):
            fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            end = time.perf_counter() + seconds
            while True:
                start = time.perf_counter()
                fn()
                stop = time.perf_counter()
                samples[name].append(stop - start)
                if stop > end:
                    break
    return {name: (min(times), statistics.median(times)) for name, times in samples.items()}


def mlp(lib, **kw):
    return lib.Sequential(lib.Linear(784, 512, **kw), lib.ReLU(), lib.Linear(512, 256, **kw), lib.ReLU(),
                          lib.Linear(256, 10, **kw))


def cnn(lib, **kw):
    return lib.Sequential(lib.Conv2d(1, 16, 3, padding=1, **kw), lib.ReLU(), lib.MaxPool2d(2),
                          lib.Conv2d(16, 32, 3, padding=1, **kw), lib.ReLU(), lib.MaxPool2d(2),
                          lib.Flatten(), lib.Linear(32 * 7 * 7, 10, **kw))


LR, MOMENTUM = 0.01, 0.9


# ---------------------------------------------------------------------------- NumPy floors
class FloorSGD:
    """The SGD-momentum update in place, as bare NumPy: b = momentum * b + g (b = g at step 1);
    p -= lr * b. One scratch array per parameter, no temporaries."""

    def __init__(self, params: list[np.ndarray]) -> None:
        self.params = params
        self.bufs: list = [None] * len(params)
        self.scratch = [np.empty_like(p) for p in params]

    def step(self, grads: list[np.ndarray]) -> None:
        for i, (p, g, tmp) in enumerate(zip(self.params, grads, self.scratch)):
            if self.bufs[i] is None:
                self.bufs[i] = g.copy()
            else:
                self.bufs[i] *= MOMENTUM
                self.bufs[i] += g
            np.multiply(self.bufs[i], LR, out=tmp)
            p -= tmp


def floor_cross_entropy_grad(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean cross-entropy of logits z (N, C), returned as d loss / d z = (softmax(z) - onehot(y)) / N, in place."""
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    float(-np.log(z[np.arange(len(y)), y]).mean())   # the loss value, as the engine returns it
    z[np.arange(len(y)), y] -= 1
    z /= len(y)
    return z


def numpy_floor_mlp(model) -> Callable[[np.ndarray, np.ndarray], None]:
    """One train step of Linear-ReLU-Linear-ReLU-Linear + cross-entropy + SGD momentum in bare NumPy."""
    sd = model.state_dict()
    params = [sd[f"{i}.{k}"] for i in (0, 2, 4) for k in ("weight", "bias")]
    (w1, b1, w2, b2, w3, b3), opt = params, FloorSGD(params)

    def step(x: np.ndarray, y: np.ndarray) -> None:
        h1 = x @ w1.T
        h1 += b1
        np.maximum(h1, 0, out=h1)
        h2 = h1 @ w2.T
        h2 += b2
        np.maximum(h2, 0, out=h2)
        z = h2 @ w3.T
        z += b3
        dz = floor_cross_entropy_grad(z, y)
        dw3, db3 = dz.T @ h2, dz.sum(axis=0)
        dh2 = dz @ w3
        dh2 *= h2 > 0
        dw2, db2 = dh2.T @ h1, dh2.sum(axis=0)
        dh1 = dh2 @ w2
        dh1 *= h1 > 0
        dw1, db1 = dh1.T @ x, dh1.sum(axis=0)        # no d x: x is data
        opt.step([dw1, db1, dw2, db2, dw3, db3])

    return step


def floor_conv3x3(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 convolution, padding 1, stride 1, as im2col + one GEMM:
    cols[(c, p, q), (n, i, j)] = xp[n, c, i + p, j + q]   (C*9, N*H*W);   y = W cols + b, back to (N, O, H, W)."""
    N, C, H, W = x.shape
    xp = np.zeros((N, C, H + 2, W + 2), x.dtype)
    xp[:, :, 1:-1, 1:-1] = x
    sN, sC, sH, sW = xp.strides
    windows = np.lib.stride_tricks.as_strided(xp, (C, 3, 3, N, H, W), (sC, sH, sW, sN, sH, sW))
    cols = windows.reshape(C * 9, N * H * W)                              # one copy
    y2 = w.reshape(len(w), -1) @ cols                                     # (O, N*H*W)
    y = np.empty((N, len(w), H, W), x.dtype)
    np.add(y2.reshape(len(w), N, H * W).transpose(1, 0, 2), b[:, None], out=y.reshape(N, len(w), H * W))
    return y, cols


def floor_conv3x3_backward(dy: np.ndarray, cols: np.ndarray, w: np.ndarray, need_dx: bool):
    """dW = dy2 cols^T,  db = sum dy,  dcols = W^T dy2 added back onto the 9 shifted input windows (col2im)."""
    N, O, H, W = dy.shape
    dy2 = np.ascontiguousarray(dy.reshape(N, O, H * W).transpose(1, 0, 2)).reshape(O, N * H * W)
    dw, db = (dy2 @ cols.T).reshape(w.shape), dy2.sum(axis=1)
    if not need_dx:
        return None, dw, db
    C = w.shape[1]
    dcols = (w.reshape(O, -1).T @ dy2).reshape(C, 3, 3, N, H, W)
    dxp = np.zeros((N, C, H + 2, W + 2), dy.dtype)
    for p in range(3):
        for q in range(3):
            dxp[:, :, p:p + H, q:q + W] += dcols[:, p, q].transpose(1, 0, 2, 3)
    return dxp[:, :, 1:-1, 1:-1], dw, db


OFFSETS = [(p, q) for p in (0, 1) for q in (0, 1)]   # the 2x2 window's offsets, in the order max-pool scans them


def floor_relu_maxpool2(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ReLU in place, then 2x2 max-pool over four strided slices; returns (pooled, first) with first[k]
    = "offset k holds the first maximum of its window" (where the gradient goes)."""
    np.maximum(y, 0, out=y)
    windows = [y[:, :, p::2, q::2] for p, q in OFFSETS]
    pooled = windows[0].copy()
    for window in windows[1:]:
        np.maximum(pooled, window, out=pooled)
    first = np.empty((4,) + pooled.shape, dtype=bool)
    free = np.ones(pooled.shape, dtype=bool)
    for k, window in enumerate(windows):
        np.equal(window, pooled, out=first[k])
        first[k] &= free
        free ^= first[k]
    return pooled, first


def floor_maxpool2_relu_backward(dp: np.ndarray, first: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Max-pool backward (the gradient to each window's first maximum), then ReLU's: dy *= [y > 0]."""
    dy = np.empty(y.shape, dtype=dp.dtype)
    for k, (p, q) in enumerate(OFFSETS):
        np.multiply(dp, first[k], out=dy[:, :, p::2, q::2])
    dy *= y > 0
    return dy


def numpy_floor_cnn(model) -> Callable[[np.ndarray, np.ndarray], None]:
    """One train step of the CNN (conv-relu-pool x 2, flatten, linear) + cross-entropy + SGD momentum."""
    sd = model.state_dict()
    params = [sd[f"{i}.{k}"] for i in (0, 3, 7) for k in ("weight", "bias")]
    (w1, b1, w2, b2, w3, b3), opt = params, FloorSGD(params)

    def step(x: np.ndarray, y: np.ndarray) -> None:
        a1, cols1 = floor_conv3x3(x, w1, b1)
        p1, m1 = floor_relu_maxpool2(a1)
        a2, cols2 = floor_conv3x3(p1, w2, b2)
        p2, m2 = floor_relu_maxpool2(a2)
        flat = p2.reshape(len(x), -1)
        z = flat @ w3.T
        z += b3
        dz = floor_cross_entropy_grad(z, y)
        dw3, db3 = dz.T @ flat, dz.sum(axis=0)
        dp2 = (dz @ w3).reshape(p2.shape)
        dp1, dw2, db2 = floor_conv3x3_backward(floor_maxpool2_relu_backward(dp2, m2, a2), cols2, w2, True)
        _, dw1, db1 = floor_conv3x3_backward(floor_maxpool2_relu_backward(dp1, m1, a1), cols1, w1, False)
        opt.step([dw1, db1, dw2, db2, dw3, db3])

    return step


# ---------------------------------------------------------------------------- minicompress vs PyTorch
def bench_model(name: str, build, floor, x: np.ndarray, y: np.ndarray) -> list[tuple]:
    ours = build(nn, rng=0)
    return bench_pair(name, ours, build(torch.nn), x, y, floor(ours))


def bench_pair(name: str, ours, theirs, x: np.ndarray, y: np.ndarray, floor=None) -> list[tuple]:
    """Rows (label, ours, theirs, floor or None): inference, train step, train step with d input.

    ``floor(x, y)`` (optional) is the train step in bare NumPy, timed with the train step.
    """
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    ce_ours, ce_theirs = CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    opt_ours = optim.SGD(ours.parameters(), lr=LR, momentum=MOMENTUM)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=LR, momentum=MOMENTUM)

    def infer_ours():
        with mc.no_grad():
            return ours(x)

    def infer_theirs():
        with torch.no_grad():
            return theirs(xt)

    def step_ours():                       # as train.fit: x is data, so no d loss / d x
        opt_ours.zero_grad()
        ce_ours(ours(x), y)
        ours.backward_params(ce_ours.backward())
        opt_ours.step()

    def step_ours_with_input_grad():
        opt_ours.zero_grad()
        ce_ours(ours(x), y)
        ours.backward(ce_ours.backward())
        opt_ours.step()

    def step_theirs():
        opt_theirs.zero_grad()
        ce_theirs(theirs(xt), yt).backward()
        opt_theirs.step()

    rows = []
    ours.eval(), theirs.eval()
    t = timed_rounds({"ours": infer_ours, "theirs": infer_theirs}, ARGS.seconds, ARGS.rounds)
    rows.append((f"{name} inference", t["ours"], t["theirs"], None))
    ours.train(), theirs.train()
    fns = {"ours": step_ours, "theirs": step_theirs}
    if floor is not None:
        fns["floor"] = lambda: floor(x, y)
    t = timed_rounds(fns, ARGS.seconds, ARGS.rounds)
    rows.append((f"{name} train step", t["ours"], t["theirs"], t.get("floor")))
    t = timed_rounds({"ours": step_ours_with_input_grad, "theirs": step_theirs}, ARGS.seconds, ARGS.rounds)
    rows.append((f"{name} train step + d input", t["ours"], t["theirs"], None))
    return rows


def main() -> None:
    threads = ARGS.threads or blas_threads()
    if threadpool_limits is not None:
        threadpool_limits(limits=threads, user_api="blas")
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    data = {"mlp": (rng.standard_normal((128, 784)).astype(np.float32), rng.integers(0, 10, 128))}
    for name in ("cnn", "resnet20", "vit"):
        shape = (64, 1, 28, 28) if name == "cnn" else (64, 1, 8, 8)
        data[name] = (rng.standard_normal(shape).astype(np.float32), rng.integers(0, 10, 64))
    rows = []
    if "mlp" in ARGS.models:
        rows += bench_model("MLP 784-512-256-10, batch 128", mlp, numpy_floor_mlp, *data["mlp"])
    if "cnn" in ARGS.models:
        rows += bench_model("CNN 2x(conv3x3-relu-maxpool), 28x28, batch 64", cnn, numpy_floor_cnn, *data["cnn"])
    if "resnet20" in ARGS.models:
        resnet = models.resnet20(num_classes=10, in_channels=1, rng=0)
        twin = resnet_twin(torch, "basic", [3, 3, 3], 10, in_channels=1, small_input=True, widths=(16, 32, 64))
        rows += bench_pair("ResNet-20, 8x8 digits, batch 64", resnet, twin, *data["resnet20"])
    if "vit" in ARGS.models:
        vit = models.VisionTransformer(8, 2, 4, 4, 64, 128, num_classes=10, in_channels=1, rng=0)
        rows += bench_pair("ViT p2 L4 D64, 8x8 digits, batch 64", vit, vit_twin(torch, 8, 2, 4, 4, 64, 128, 10, 1),
                           *data["vit"])
    keys = [f"{model}_{what}" for model in MODELS if model in ARGS.models
            for what in ("inference", "train_step", "train_step_with_input_grad")]
    print(f"threads: {threads} (NumPy BLAS and torch.set_num_threads); numpy {np.__version__}, "
          f"torch {torch.__version__}, {platform.machine()}, python {sys.version.split()[0]}")
    width = max(len(r[0]) for r in rows)
    print(f"{'ms per call (min / median)':<{width}}  {'minicompress':>17}  {'PyTorch':>17}  {'ratio':>5}"
          f"  {'NumPy floor':>17}  {'vs floor':>8}")
    for label, ours, theirs, floor in rows:
        cells = [f"{t[0] * 1e3:7.3f} / {t[1] * 1e3:7.3f}" if t else "" for t in (ours, theirs, floor)]
        vs_floor = f"{ours[0] / floor[0]:.2f}" if floor else ""
        print(f"{label:<{width}}  {cells[0]:>17}  {cells[1]:>17}  {ours[0] / theirs[0]:>5.2f}"
              f"  {cells[2]:>17}  {vs_floor:>8}")
    ratios = {k: round(ours[0] / theirs[0], 3) for k, (_, ours, theirs, _) in zip(keys, rows)}
    floors = {k: round(ours[0] / floor[0], 3) for k, (_, ours, _, floor) in zip(keys, rows) if floor}
    print(json.dumps({"bench": "engine", "threads": threads, "ratio_minicompress_over_pytorch": ratios,
                      "ratio_minicompress_over_numpy_floor": floors}))


if __name__ == "__main__":
    main()
