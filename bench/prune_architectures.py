"""Does structural pruning of real architectures pay on the digits: accuracy at 2x fewer MACs, and real speed?

For each model and seed: train dense (AdamW lr 2e-3, weight decay 0.01, cosine, batch 64), prune, fine-tune
(AdamW lr 1e-3, cosine), and measure test accuracy (359 digits), parameters, MACs per sample and the wall-clock
time of inference at batch 64 (fastest of interleaved rounds, dense and pruned in the same run).

- ResNet-20 and MobileNetV2 (width 0.5): ``prune.channel_prune`` on dependency groups, L2 group magnitude, the
  smallest uniform ratio (a multiple of 0.05) that removes at least half of the MACs;
- the small ViT (patch 2, 4 layers, 4 heads, width 64): ``prune.prune_heads`` (half the heads, L2) and half of
  each MLP's hidden units (``channel_prune``).

    python bench/prune_architectures.py [--epochs 30] [--finetune 15] [--kd] [--seeds 0 1 2] [--threads 1]
                                        [--iterative N]

``--iterative N`` (ResNet / MobileNetV2): reach the same ratio in N steps of ``prune.ChannelPruner``
(Torch-Pruning's iterative schedule), fine-tuning finetune / N epochs after each step.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time

import numpy as np

from minicompress import metrics, models, nn, optim, prune, train
from minicompress.data import DataLoader, load_digits

MODELS = {
    "resnet20": lambda seed: models.resnet20(num_classes=10, in_channels=1, rng=seed),
    "mobilenet_v2_w0.5": lambda seed: models.mobilenet_v2(num_classes=10, width_mult=0.5, in_channels=1,
                                                          small_input=True, rng=seed),
    "vit_p2_l4_d64": lambda seed: models.VisionTransformer(8, 2, 4, 4, 64, 128, num_classes=10, in_channels=1,
                                                           rng=seed),
}


def fit(model: nn.Module, data: tuple, epochs: int, lr: float, seed: int, teacher: nn.Module | None = None) -> None:
    """AdamW + cosine on labels, or with ``teacher`` distillation (KDLoss T=4, alpha=0.7, offline logits)."""
    x_train, y_train = data[0], data[1]
    if teacher is not None:
        from minicompress.distill import Distiller, KDLoss
        Distiller(loss=KDLoss(T=4.0, alpha=0.7), optimizer=lambda p: optim.AdamW(p, lr=lr, weight_decay=0.01),
                  scheduler=lambda o: optim.lr_scheduler.CosineAnnealingLR(o, T_max=epochs), epochs=epochs,
                  batch_size=64, quiet=True, rng=seed).fit(model, x_train, y_train, teacher=teacher)
        return
    opt = optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loader = DataLoader(x_train, y_train, batch_size=64, shuffle=True, rng=seed)
    train.fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=epochs, scheduler=sched, quiet=True)


def accuracy(model: nn.Module, data: tuple) -> float:
    return train.evaluate(model, data[2], data[3])["accuracy"]


def prune_model(name: str, model: nn.Module, x: np.ndarray) -> tuple[nn.Module, str]:
    if name.startswith("vit"):
        small = prune.prune_heads(model, 0.5, "l2")
        return prune.channel_prune(small, x, 0.5, "l2"), "heads 0.5 + MLP 0.5"
    dense = metrics.count_macs(model, x.shape[1:])
    for step in range(1, 20):
        ratio = round(0.05 * step, 2)
        small = prune.channel_prune(model, x, ratio, "l2")
        if 2 * metrics.count_macs(small, x.shape[1:]) <= dense:
            return small, f"channels {ratio}"
    raise RuntimeError(f"{name}: no ratio halves the MACs")


def latency_pair(dense: nn.Module, small: nn.Module, x: np.ndarray, rounds: int = 15) -> tuple[float, float]:
    dense.eval(), small.eval()
    best = [np.inf, np.inf]
    with nn.no_grad():
        for _ in range(rounds):
            for k, m in enumerate((dense, small)):
                start = time.perf_counter()
                m(x)
                best[k] = min(best[k], time.perf_counter() - start)
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--finetune", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--kd", action="store_true", help="fine-tune with distillation from the dense model")
    parser.add_argument("--iterative", type=int, default=1, help="prune in N steps, fine-tuning after each")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    data = load_digits()
    x64 = data[2][:64]
    print(f"digits; dense {args.epochs} epochs, fine-tune {args.finetune}{' with KD from the dense model' if args.kd else ''}; "
          f"{args.threads} thread(s); accuracy %")
    print(f"{'model':<18}{'seed':>5}  {'pruning':<20}{'dense':>7}{'pruned':>8}{'tuned':>7}{'diff':>7}"
          f"{'MACs x':>8}{'params x':>9}{'ms dense':>10}{'ms pruned':>10}{'speed-up':>9}")
    results = {}
    for name in args.models:
        rows = []
        for seed in args.seeds:
            model = MODELS[name](seed)
            fit(model, data, args.epochs, 2e-3, seed)
            dense_acc = accuracy(model, data)
            small, how = prune_model(name, model.eval(), x64)
            pruned_acc = accuracy(small, data)
            teacher = model.eval() if args.kd else None
            if args.iterative > 1 and not name.startswith("vit"):
                small = copy.deepcopy(model)
                pruner = prune.ChannelPruner(small, x64, float(how.split()[-1]), "l2", iterative_steps=args.iterative)
                for step in range(args.iterative):
                    pruner.step()
                    fit(small, data, max(1, args.finetune // args.iterative), 1e-3, seed + 100 + step, teacher=teacher)
                how += f" in {args.iterative} steps"
            else:
                fit(small, data, args.finetune, 1e-3, seed + 100, teacher=teacher)
            tuned_acc = accuracy(small, data)
            macs = metrics.count_macs(model, x64.shape[1:]) / metrics.count_macs(small, x64.shape[1:])
            params = metrics.count_params(model) / metrics.count_params(small)
            t_dense, t_small = latency_pair(model, small, x64)
            rows.append(dict(seed=seed, pruning=how, dense=dense_acc, pruned=pruned_acc, tuned=tuned_acc,
                             macs_ratio=macs, params_ratio=params, ms_dense=1e3 * t_dense, ms_pruned=1e3 * t_small))
            print(f"{name:<18}{seed:>5}  {how:<20}{100 * dense_acc:>7.2f}{100 * pruned_acc:>8.2f}"
                  f"{100 * tuned_acc:>7.2f}{100 * (tuned_acc - dense_acc):>+7.2f}{macs:>8.2f}{params:>9.2f}"
                  f"{1e3 * t_dense:>10.2f}{1e3 * t_small:>10.2f}{t_dense / t_small:>9.2f}", flush=True)
        mean = {k: float(np.mean([r[k] for r in rows])) for k in ("dense", "tuned", "macs_ratio", "ms_dense",
                                                                  "ms_pruned")}
        print(f"{name:<18}{'mean':>5}  {'':<20}{100 * mean['dense']:>7.2f}{'':>8}{100 * mean['tuned']:>7.2f}"
              f"{100 * (mean['tuned'] - mean['dense']):>+7.2f}{mean['macs_ratio']:>8.2f}{'':>9}"
              f"{mean['ms_dense']:>10.2f}{mean['ms_pruned']:>10.2f}{mean['ms_dense'] / mean['ms_pruned']:>9.2f}")
        results[name] = rows
    print(json.dumps({"bench": "prune_architectures", "epochs": args.epochs, "finetune": args.finetune, "kd": args.kd,
                      "iterative": args.iterative,
                      "results": results}))


if __name__ == "__main__":
    main()
