"""How fast is the NumPy engine next to PyTorch eager, on the same threads?

Three models, same weights in both libraries (loaded through ``state_dict``):
  MLP  784-512-256-10 (ReLU), batch 128, input (128, 784)
  CNN  [conv3x3(pad 1)-ReLU-maxpool2] x 2 (1->16->32 channels), flatten, linear 1568->10,
       batch 64, input (64, 1, 28, 28)
  ResNet-20 (CIFAR-style: 3x3 stem, 3 stages x 3 BasicBlocks of 16/32/64 channels), digits-sized
       input (64, 1, 8, 8); PyTorch runs the twin of torchvision's blocks from tests/models/torch_twins.py
  ViT (patch 2, 4 layers, 4 heads, width 64, MLP 128) on (64, 1, 8, 8): 17 tokens; torchvision's twin
Measured: inference (no_grad / eval) and one training step = forward + cross-entropy + backward + SGD
update (lr 0.01). PyTorch does not compute d loss / d input for a data tensor that does not require
grad; minicompress is told the same with ``model[0].needs_input_grad = False`` (the row "... + d input"
shows the cost when it is computed anyway).

Each number is the fastest time per call over interleaved rounds (minicompress, PyTorch, minicompress,
...) of ~0.1 s each: the minimum is the least disturbed by other processes on a shared machine (the
median is printed too). Prints a table and one JSON line of ratios minicompress / PyTorch (lower is
better), from the minima.

    python bench/engine.py [--threads N] [--seconds S]
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


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="BLAS / PyTorch threads (default: NumPy's)")
    parser.add_argument("--seconds", type=float, default=0.1, help="length of one timing round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per measurement")
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


def bench_model(name: str, build, x: np.ndarray, y: np.ndarray) -> list[tuple[str, tuple, tuple]]:
    ours = build(nn, rng=0)
    return bench_pair(name, ours, build(torch.nn), ours[0], x, y)


def bench_pair(name: str, ours, theirs, first, x: np.ndarray, y: np.ndarray) -> list[tuple[str, tuple, tuple]]:
    """Inference, train step, and train step with d input of ``ours`` vs ``theirs`` (``first``: our first layer)."""
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    ce_ours, ce_theirs = CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    opt_ours = optim.SGD(ours.parameters(), lr=0.01)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.01)

    def infer_ours():
        with mc.no_grad():
            return ours(x)

    def infer_theirs():
        with torch.no_grad():
            return theirs(xt)

    def step_ours():
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
    rows.append((f"{name} inference", t["ours"], t["theirs"]))
    ours.train(), theirs.train()
    first.needs_input_grad = False
    t = timed_rounds({"ours": step_ours, "theirs": step_theirs}, ARGS.seconds, ARGS.rounds)
    rows.append((f"{name} train step", t["ours"], t["theirs"]))
    first.needs_input_grad = True
    t = timed_rounds({"ours": step_ours, "theirs": step_theirs}, ARGS.seconds, ARGS.rounds)
    rows.append((f"{name} train step + d input", t["ours"], t["theirs"]))
    return rows


def main() -> None:
    threads = ARGS.threads or blas_threads()
    if threadpool_limits is not None:
        threadpool_limits(limits=threads, user_api="blas")
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    rows = bench_model("MLP 784-512-256-10, batch 128", mlp,
                       rng.standard_normal((128, 784)).astype(np.float32), rng.integers(0, 10, 128))
    rows += bench_model("CNN 2x(conv3x3-relu-maxpool), 28x28, batch 64", cnn,
                        rng.standard_normal((64, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 64))
    resnet = models.resnet20(num_classes=10, in_channels=1, rng=0)
    twin = resnet_twin(torch, "basic", [3, 3, 3], 10, in_channels=1, small_input=True, widths=(16, 32, 64))
    rows += bench_pair("ResNet-20, 8x8 digits, batch 64", resnet, twin, resnet.conv1,
                       rng.standard_normal((64, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 64))
    vit = models.VisionTransformer(8, 2, 4, 4, 64, 128, num_classes=10, in_channels=1, rng=0)
    rows += bench_pair("ViT p2 L4 D64, 8x8 digits, batch 64", vit, vit_twin(torch, 8, 2, 4, 4, 64, 128, 10, 1),
                       vit.conv_proj, rng.standard_normal((64, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 64))

    print(f"threads: {threads} (NumPy BLAS and torch.set_num_threads); numpy {np.__version__}, "
          f"torch {torch.__version__}, {platform.machine()}, python {sys.version.split()[0]}")
    width = max(len(r[0]) for r in rows)
    print(f"{'ms per call (min / median)':<{width}}  {'minicompress':>17}  {'PyTorch':>17}  {'ratio':>5}")
    for label, ours, theirs in rows:
        cells = [f"{t[0] * 1e3:7.3f} / {t[1] * 1e3:7.3f}" for t in (ours, theirs)]
        print(f"{label:<{width}}  {cells[0]:>17}  {cells[1]:>17}  {ours[0] / theirs[0]:>5.2f}")
    keys = [f"{model}_{what}" for model in ("mlp", "cnn", "resnet20", "vit")
            for what in ("inference", "train_step", "train_step_with_input_grad")]
    ratios = {k: round(ours[0] / theirs[0], 3) for k, (_, ours, theirs) in zip(keys, rows)}
    print(json.dumps({"bench": "engine", "threads": threads, "ratio_minicompress_over_pytorch": ratios}))


if __name__ == "__main__":
    main()
