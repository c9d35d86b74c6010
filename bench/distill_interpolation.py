"""Parameter-interpolation distillation vs plain KD vs training alone, on the digits (issue 19).

Per seed: a teacher CNN (``models.digits_cnn``) trained on labels; students of the *same* architecture from a
different initialisation, trained for the same epochs on the same images:

- alone: labels only (cross-entropy);
- KD: offline KD from the teacher (T = 4, alpha = 0.9);
- interpolation lam: labels, and after every step theta_s <- lam * theta_t + (1 - lam) * theta_s
  (``Distiller(mode='interpolate')``), BatchNorm statistics interpolated; constant and linearly decaying lam.

Like bench/distill.py, teacher and students see the first ``--train-fraction`` of the training split (default
0.2: 288 images, where KD helped there). Test accuracy per seed and the paired gain over "alone".

    python bench/distill_interpolation.py                  # the table in bench/README.md
    python bench/distill_interpolation.py --train-fraction 1.0

Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np

from minicompress.data import DataLoader, load_digits
from minicompress.distill import Distiller, KDLoss
from minicompress.models import digits_cnn
from minicompress.nn.losses import CrossEntropyLoss
from minicompress.optim import Adam
from minicompress.train import evaluate, fit

LAMS = (0.001, 0.01, 0.1)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--teacher-epochs", type=int, default=40)
    p.add_argument("--train-fraction", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=3e-3)
    return p.parse_args()


def run_seed(args, data, seed: int) -> dict[str, float]:
    x, y, xt, yt = data
    adam = lambda params: Adam(params, lr=args.lr)  # noqa: E731
    student = lambda: digits_cnn(rng=np.random.default_rng(seed))  # noqa: E731
    teacher = digits_cnn(rng=np.random.default_rng(10_000 + seed))
    fit(teacher, CrossEntropyLoss(), adam(teacher.parameters()), DataLoader(x, y, 64, shuffle=True, rng=seed),
        epochs=args.teacher_epochs, quiet=True)
    acc = {"teacher": evaluate(teacher, xt, yt)["accuracy"]}
    alone = student()
    fit(alone, CrossEntropyLoss(), adam(alone.parameters()), DataLoader(x, y, 64, shuffle=True, rng=seed),
        epochs=args.epochs, quiet=True)
    acc["alone"] = evaluate(alone, xt, yt)["accuracy"]
    common = dict(optimizer=adam, epochs=args.epochs, batch_size=64, quiet=True, rng=seed)
    kd = Distiller(KDLoss(T=4.0, alpha=0.9), **common).fit(student(), x, y, teacher=teacher)
    acc["KD (T=4, alpha=0.9)"] = evaluate(kd.student_, xt, yt)["accuracy"]
    for lam in LAMS:
        d = Distiller(mode="interpolate", lam=lam, **common).fit(student(), x, y, teacher=teacher)
        acc[f"interpolation lam={lam}"] = evaluate(d.student_, xt, yt)["accuracy"]
    d = Distiller(mode="interpolate", lam=0.1, lam_schedule="linear", **common).fit(student(), x, y, teacher=teacher)
    acc["interpolation lam=0.1 -> 0 (linear)"] = evaluate(d.student_, xt, yt)["accuracy"]
    return acc


def main() -> None:
    args = parse_args()
    x, y, xt, yt = load_digits()
    n = int(round(args.train_fraction * len(x)))
    data = (x[:n], y[:n], xt, yt)
    start = time.perf_counter()
    runs = [run_seed(args, data, seed) for seed in range(args.seeds)]
    print(f"digits: {n} train / {len(xt)} test, {args.seeds} seeds, {args.epochs} epochs (teacher "
          f"{args.teacher_epochs}); student = the teacher's architecture, another initialisation")
    summary = {}
    for row in runs[0]:
        v = np.array([r[row] for r in runs])
        gain = v - np.array([r["alone"] for r in runs])
        summary[row] = {"mean": float(v.mean()), "per_seed": [float(a) for a in v], "gain_vs_alone": float(gain.mean())}
        print(f"{row:<40}{v.mean():>8.4f}   gain vs alone {gain.mean():+.4f}   " + " ".join(f"{a:.4f}" for a in v))
    print(f"{time.perf_counter() - start:.0f} s")
    print(json.dumps({"bench": "distill_interpolation", "train": n, "seeds": args.seeds, "epochs": args.epochs,
                      "accuracy": summary}))


if __name__ == "__main__":
    main()
