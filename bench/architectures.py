"""Do the real architectures train as well here as in PyTorch? Digits, same recipe, side by side.

For each model and seed: minicompress's model is built with the seed, PyTorch's twin of torchvision's
modules (tests/models/torch_twins.py) gets the same initial weights through ``state_dict``, and both
train on the same mini-batches in the same order: AdamW (lr 2e-3, weight decay 0.01), cosine
annealing over the epochs, batch 64, cross-entropy. Reported: test accuracy (359 digits) per seed.

    python bench/architectures.py [--epochs 30] [--seeds 0 1 2] [--threads 1]

Models: ResNet-20 (CIFAR-style, 3x3 stem, 16/32/64 channels), MobileNetV2 (width 0.5, stride-1 stem)
and a small ViT (patch 2, 4 layers, 4 heads, width 64, MLP 128), all on 1-channel 8x8 inputs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from minicompress import models, nn, optim
from minicompress.data import load_digits

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "models"))
from torch_twins import mobilenet_v2_twin, resnet_twin, vit_twin  # noqa: E402  (twins of torchvision's modules)

MODELS = {
    "resnet20": (lambda seed: models.resnet20(num_classes=10, in_channels=1, rng=seed),
                 lambda: resnet_twin(torch, "basic", [3, 3, 3], 10, in_channels=1, small_input=True,
                                     widths=(16, 32, 64))),
    "mobilenet_v2_w0.5": (lambda seed: models.mobilenet_v2(num_classes=10, width_mult=0.5, in_channels=1,
                                                           small_input=True, rng=seed),
                          lambda: mobilenet_v2_twin(torch, 10, 0.5, in_channels=1, small_input=True)),
    "vit_p2_l4_d64": (lambda seed: models.VisionTransformer(8, 2, 4, 4, 64, 128, num_classes=10, in_channels=1,
                                                            rng=seed),
                      lambda: vit_twin(torch, 8, 2, 4, 4, 64, 128, 10, in_channels=1)),
}


def train_both(name: str, seed: int, epochs: int, data: tuple) -> tuple[float, float, float, float]:
    x_train, y_train, x_test, y_test = data
    build_ours, build_theirs = MODELS[name]
    ours, theirs = build_ours(seed), build_theirs()
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    opt_o = optim.AdamW(ours.parameters(), lr=2e-3, weight_decay=0.01)
    opt_t = torch.optim.AdamW(theirs.parameters(), lr=2e-3, weight_decay=0.01)
    sched_o = optim.lr_scheduler.CosineAnnealingLR(opt_o, T_max=epochs)
    sched_t = torch.optim.lr_scheduler.CosineAnnealingLR(opt_t, T_max=epochs)
    ce_o, ce_t = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    seconds = [0.0, 0.0]
    for _ in range(epochs):
        ours.train(), theirs.train()
        for idx in np.array_split(rng.permutation(len(x_train)), len(x_train) // 64):
            xb, yb = x_train[idx], y_train[idx]
            start = time.perf_counter()
            opt_o.zero_grad()
            ce_o(ours(xb), yb)
            ours.backward(ce_o.backward())
            opt_o.step()
            seconds[0] += time.perf_counter() - start
            start = time.perf_counter()
            opt_t.zero_grad()
            ce_t(theirs(torch.from_numpy(xb)), torch.from_numpy(yb)).backward()
            opt_t.step()
            seconds[1] += time.perf_counter() - start
        sched_o.step(), sched_t.step()
    ours.eval(), theirs.eval()
    with nn.no_grad():
        acc_o = float((ours(x_test).argmax(1) == y_test).mean())
    with torch.no_grad():
        acc_t = float((theirs(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    return acc_o, acc_t, seconds[0], seconds[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_digits()
    results = {}
    print(f"digits, {args.epochs} epochs AdamW + cosine, batch 64, {args.threads} thread(s); test accuracy %")
    print(f"{'model':<20}{'seed':>5}{'minicompress':>14}{'PyTorch':>9}{'diff':>7}{'train s (ours / torch)':>26}")
    for name in args.models:
        rows = []
        for seed in args.seeds:
            acc_o, acc_t, s_o, s_t = train_both(name, seed, args.epochs, data)
            rows.append((seed, acc_o, acc_t))
            print(f"{name:<20}{seed:>5}{100 * acc_o:>14.2f}{100 * acc_t:>9.2f}{100 * (acc_o - acc_t):>+7.2f}"
                  f"{s_o:>14.1f} / {s_t:.1f}", flush=True)
        mean_o, mean_t = (float(np.mean([r[i] for r in rows])) for i in (1, 2))
        print(f"{name:<20}{'mean':>5}{100 * mean_o:>14.2f}{100 * mean_t:>9.2f}{100 * (mean_o - mean_t):>+7.2f}")
        results[name] = {"seeds": args.seeds, "minicompress": [r[1] for r in rows], "pytorch": [r[2] for r in rows]}
    print(json.dumps({"bench": "architectures", "epochs": args.epochs, "results": results}))


if __name__ == "__main__":
    main()
