"""Does knowledge distillation help a small student on the bundled digits?

Per seed: a teacher CNN trained on labels; a student MLP >= 4x smaller (parameters) trained on labels
alone ("scratch"); the same student architecture and initialisation trained by offline KD from the
teacher; a DML pair (two such students learning from each other, no teacher); a born-again
generation (a fresh student distilled from the scratch student). Test accuracy, mean +- std over
seeds, the mean paired gain KD - scratch, and the teacher / student parameter ratio.

    /tmp/venv/bin/python bench/distill.py                 # the table in bench/README.md (~1 min)
    /tmp/venv/bin/python bench/distill.py --search        # the T / alpha / epochs grid behind the defaults
    /tmp/venv/bin/python bench/distill.py --train-fraction 1.0 --seeds 5    # all 1,438 training images
    python bench/distill.py --arch                                    # ResNet teacher -> other architectures,
    python bench/distill.py --arch --train-fraction 0.2 --epochs 40 --teacher-epochs 60   # hint, AT, init
                                                                      # from the teacher (bench/distill_arch.py)

What was measured (not assumed): with the first 20% of the training split (288 images) KD beats the
labels-only student on 9/10 seeds (+1.2 points, paired t = 3.4) and on every (T, alpha) of the
grid at 100 epochs; with the whole training split the student nearly matches the teacher already
and the KD gain (+0.4 points, t = 1.1 over 5 seeds) is within the noise. With an over-confident MLP
teacher (logits up to +-50) and lr 1e-3, KD at T = 4 was clearly *worse* than labels after 10 epochs.

Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")    # one core: Numba's threads only contend on a shared machine

import numpy as np

from minicompress import metrics
from minicompress.data import DataLoader, load_digits
from minicompress.distill import Distiller, KDLoss
from minicompress.models import digits_cnn, digits_mlp
from minicompress.nn.losses import CrossEntropyLoss
from minicompress.optim import Adam
from minicompress.train import evaluate, fit


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", action="store_true", help="ResNet teacher to other architectures (distill_arch.py): "
                   "defaults 3 seeds, all the training split, 15 student and 30 teacher epochs, lr 3e-3")
    p.add_argument("--seeds", type=int, default=None, help="default 10 (3 with --arch)")
    p.add_argument("--teacher-channels", type=int, nargs=2, default=[8, 16])
    p.add_argument("--teacher-hidden", type=int, default=32)
    p.add_argument("--teacher-epochs", type=int, default=None, help="default 60 (30 with --arch)")
    p.add_argument("--teacher-lr", type=float, default=3e-3)
    p.add_argument("--student-hidden", type=int, nargs="+", default=[16])
    p.add_argument("--epochs", type=int, default=None,
                   help="student epochs, every method (default 100, 15 with --arch)")
    p.add_argument("--train-fraction", type=float, default=None,
                   help="use the first fraction of the train split (default 0.2, 1.0 with --arch)")
    p.add_argument("--T", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--lr", type=float, default=None,
                   help="student learning rate, Adam (default 1e-2, 3e-3 with --arch)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--search", action="store_true", help="grid over T, alpha, epochs (KD vs scratch only)")
    args = p.parse_args()
    defaults = dict(seeds=3, teacher_epochs=30, epochs=15, train_fraction=1.0, lr=3e-3) if args.arch else \
        dict(seeds=10, teacher_epochs=60, epochs=100, train_fraction=0.2, lr=1e-2)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def adam(lr: float):
    return lambda params: Adam(params, lr=lr)


def student(args: argparse.Namespace, seed: int):
    return digits_mlp(tuple(args.student_hidden), rng=np.random.default_rng(seed))


def train_teacher(args, x, y, seed: int):
    teacher = digits_cnn(tuple(args.teacher_channels), args.teacher_hidden, rng=np.random.default_rng(10_000 + seed))
    fit(teacher, CrossEntropyLoss(), Adam(teacher.parameters(), lr=args.teacher_lr),
        DataLoader(x, y, args.batch_size, shuffle=True, rng=seed), epochs=args.teacher_epochs, quiet=True)
    return teacher


def train_scratch(args, x, y, seed: int, epochs: int):
    model = student(args, seed)
    fit(model, CrossEntropyLoss(), Adam(model.parameters(), lr=args.lr),
        DataLoader(x, y, args.batch_size, shuffle=True, rng=seed), epochs=epochs, quiet=True)
    return model


def distill(args, x, y, seed: int, teacher, T: float, alpha: float, epochs: int):
    return Distiller(KDLoss(T=T, alpha=alpha), optimizer=adam(args.lr), epochs=epochs, batch_size=args.batch_size,
                     quiet=True, rng=seed).fit(student(args, seed), x, y, teacher=teacher).student_


def run_seed(args, data, seed: int) -> dict[str, float]:
    x, y, xt, yt = data
    acc = {}
    teacher = train_teacher(args, x, y, seed)
    acc["teacher"] = evaluate(teacher, xt, yt)["accuracy"]
    scratch = train_scratch(args, x, y, seed, args.epochs)
    acc["scratch student"] = evaluate(scratch, xt, yt)["accuracy"]
    kd = distill(args, x, y, seed, teacher, args.T, args.alpha, args.epochs)
    acc["KD student"] = evaluate(kd, xt, yt)["accuracy"]
    pair = [student(args, seed), student(args, 20_000 + seed)]
    Distiller(KDLoss(T=1.0, alpha=0.5), mode="mutual", optimizer=adam(args.lr), epochs=args.epochs,
              batch_size=args.batch_size, quiet=True, rng=seed).fit(pair, x, y)
    acc["DML pair (mean of 2)"] = float(np.mean([evaluate(m, xt, yt)["accuracy"] for m in pair]))
    born_again = Distiller(KDLoss(T=args.T, alpha=args.alpha), mode="self", generations=1, optimizer=adam(args.lr),
                           epochs=args.epochs, batch_size=args.batch_size, quiet=True, rng=seed)
    born_again.fit(lambda: student(args, 30_000 + seed), x, y, teacher=scratch)
    acc["born-again gen 1"] = evaluate(born_again.student_, xt, yt)["accuracy"]
    acc["_ratio"] = metrics.count_params(teacher) / metrics.count_params(scratch)
    return acc


def load(args):
    x, y, xt, yt = load_digits()
    n = int(round(args.train_fraction * len(x)))
    return x[:n], y[:n], xt, yt


def main_table(args) -> None:
    data = load(args)
    start = time.perf_counter()
    runs = [run_seed(args, data, seed) for seed in range(args.seeds)]
    rows = [k for k in runs[0] if not k.startswith("_")]
    ratio = runs[0]["_ratio"]
    gain = np.array([r["KD student"] - r["scratch student"] for r in runs])
    print(f"digits: {len(data[0])} train / {len(data[2])} test, {args.seeds} seeds; teacher CNN "
          f"{args.teacher_channels}+{args.teacher_hidden} ({args.teacher_epochs} ep), "
          f"student MLP {args.student_hidden} "
          f"({args.epochs} ep), params ratio {ratio:.1f}x; KD T={args.T} alpha={args.alpha}")
    print(f"{'model':<24}{'test accuracy (mean +- std)':>30}   per seed")
    summary = {}
    for row in rows:
        v = np.array([r[row] for r in runs])
        summary[row] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                        "per_seed": [float(a) for a in v]}
        print(f"{row:<24}{v.mean():>22.4f} +- {summary[row]['std']:.4f}   " + " ".join(f"{a:.3f}" for a in v))
    wins = int((gain > 0).sum())
    sd = gain.std(ddof=1) if len(gain) > 1 else 0.0
    t_stat = gain.mean() / (sd / np.sqrt(len(gain))) if sd > 0 else float("nan")
    print(f"KD - scratch (paired by seed): {gain.mean():+.4f} +- {sd:.4f} (paired t = {t_stat:.1f}), "
          f"KD better on {wins}/{len(gain)} seeds;  {time.perf_counter() - start:.0f} s")
    print(json.dumps({"bench": "distill", "train": len(data[0]), "seeds": args.seeds, "param_ratio": ratio,
                      "T": args.T, "alpha": args.alpha, "student_epochs": args.epochs,
                      "teacher_epochs": args.teacher_epochs, "teacher_channels": args.teacher_channels,
                      "teacher_hidden": args.teacher_hidden, "train_fraction": args.train_fraction,
                      "student_hidden": args.student_hidden, "accuracy": summary,
                      "kd_gain_mean": float(gain.mean()), "kd_gain_std": float(sd), "kd_gain_t": float(t_stat),
                      "kd_wins": wins}))


def main_search(args) -> None:
    """KD minus scratch (paired by seed), mean over seeds, for each (epochs, T, alpha)."""
    data = load(args)
    x, y, xt, yt = data
    teachers = [train_teacher(args, x, y, seed) for seed in range(args.seeds)]
    results = []
    for epochs in (30, 100):
        scratch = [evaluate(train_scratch(args, x, y, s, epochs), xt, yt)["accuracy"] for s in range(args.seeds)]
        for T, alpha in itertools.product((1.0, 2.0, 4.0, 8.0), (0.5, 0.9)):
            kd = [evaluate(distill(args, x, y, s, teachers[s], T, alpha, epochs), xt, yt)["accuracy"]
                  for s in range(args.seeds)]
            gain = np.array(kd) - np.array(scratch)
            results.append({"epochs": epochs, "T": T, "alpha": alpha, "scratch": float(np.mean(scratch)),
                            "kd": float(np.mean(kd)), "gain": float(gain.mean()), "wins": int((gain > 0).sum())})
            print(f"epochs {epochs:>3}  T {T:>4}  alpha {alpha:>4}  scratch {np.mean(scratch):.4f}  "
                  f"KD {np.mean(kd):.4f}  gain {gain.mean():+.4f}  wins {(gain > 0).sum()}/{len(gain)}", flush=True)
    print(json.dumps({"bench": "distill-search", "train": len(x), "student_hidden": args.student_hidden,
                      "results": results}))


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.arch:
        import distill_arch            # bench/ is on sys.path when this file runs as a script
        distill_arch.main(arguments)
    else:
        main_search(arguments) if arguments.search else main_table(arguments)
