"""The digits recipe of ``bench/architectures.py`` for minicompress alone, with the trained weights cached.

AdamW (lr 2e-3, weight decay 0.01), cosine annealing over the epochs, batch 64, cross-entropy, the same
mini-batch order as ``bench/architectures.py`` (``default_rng(seed).permutation`` split into batches of 64).
Models (1-channel 8x8 digits): ResNet-20 (CIFAR-style), MobileNetV2 width 0.5 with a stride-1 stem and every
ReLU6 replaced by ReLU (torchvision's quantizable MobileNetV2, ``models.replace_relu``: trained so from the
start, so the float and int8 models compute the same function up to rounding), and the ViT (patch 2,
4 layers, 4 heads, width 64, MLP 128).

    python bench/digits_training.py --models resnet20 --seeds 0 --epochs 30 [--cache DIR]

Trained state dicts are kept in ``DIR/<model>_seed<seed>_ep<epochs>.npz`` and reused by later runs.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from minicompress import models, nn, optim
from minicompress.data import load_digits

DEFAULT_CACHE = os.path.join(os.environ.get("TMPDIR", "/tmp"), "minicompress_digits_models")

BUILDERS = {
    "resnet20": lambda seed: models.resnet20(num_classes=10, in_channels=1, rng=seed),
    "mobilenet_v2_w0.5": lambda seed: models.replace_relu(
        models.mobilenet_v2(num_classes=10, width_mult=0.5, in_channels=1, small_input=True, rng=seed)),
    "vit_p2_l4_d64": lambda seed: models.VisionTransformer(8, 2, 4, 4, 64, 128, num_classes=10, in_channels=1,
                                                           rng=seed),
}


def train(model: nn.Module, seed: int, epochs: int, data: tuple) -> float:
    """Train ``model`` in place with the recipe (module docstring); returns the training seconds."""
    x_train, y_train = data[0], data[1]
    opt = optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    ce = nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for idx in np.array_split(rng.permutation(len(x_train)), len(x_train) // 64):
            opt.zero_grad()
            ce(model(x_train[idx]), y_train[idx])
            model.backward(ce.backward())
            opt.step()
        sched.step()
    model.eval()
    return time.perf_counter() - start


def trained(name: str, seed: int, epochs: int, data: tuple, cache: str = DEFAULT_CACHE) -> nn.Module:
    """The model ``name`` trained with ``seed`` for ``epochs`` (eval mode), from the cache when present."""
    model = BUILDERS[name](seed)
    path = os.path.join(cache, f"{name}_seed{seed}_ep{epochs}.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            model.load_state_dict({k: f[k] for k in f.files})
        return model.eval()
    seconds = train(model, seed, epochs, data)
    os.makedirs(cache, exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **model.state_dict())
    os.replace(tmp, path)
    print(f"trained {name} seed {seed}, {epochs} epochs: {seconds:.0f} s", flush=True)
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--cache", default=DEFAULT_CACHE)
    args = p.parse_args()
    data = load_digits()
    for name in args.models:
        for seed in args.seeds:
            model = trained(name, seed, args.epochs, data, args.cache)
            with nn.no_grad():
                acc = float((model(data[2]).argmax(1) == data[3]).mean())
            print(f"{name} seed {seed}: float test accuracy {100 * acc:.2f} %", flush=True)


if __name__ == "__main__":
    main()
