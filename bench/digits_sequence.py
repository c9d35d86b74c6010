"""The digits as sequences (8 time steps of 8 pixels): small GRU / LSTM students, a CNN teacher distilled into a GRU,
and dynamic int8 / float16 of the recurrent students (issue 19's results).

Per seed: a CNN teacher (``models.digits_cnn``) trained on labels; a GRU (``models.digits_rnn('GRU', H)``) trained
on labels alone; the same GRU (same initialisation) distilled from the teacher (offline KD); an LSTM alone; each
recurrent model then quantized with ``quantize_dynamic`` (qint8 and float16: LSTM/GRU and Linear). Test accuracy
per seed, mean, and the paired KD - alone gain.

    python bench/digits_sequence.py                       # the table in bench/README.md
    python bench/digits_sequence.py --seeds 5 --epochs 30

Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np

from minicompress import metrics, nn, quant
from minicompress.data import DataLoader, load_digits
from minicompress.distill import Distiller, KDLoss
from minicompress.models import digits_cnn, digits_rnn
from minicompress.nn.losses import CrossEntropyLoss
from minicompress.optim import Adam
from minicompress.train import evaluate, fit


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--hidden", type=int, default=32, help="recurrent hidden size")
    p.add_argument("--epochs", type=int, default=40, help="recurrent student epochs")
    p.add_argument("--teacher-epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--T", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=64)
    return p.parse_args()


def train(model, x, y, args, seed: int, epochs: int):
    fit(model, CrossEntropyLoss(), Adam(model.parameters(), lr=args.lr),
        DataLoader(x, y, args.batch_size, shuffle=True, rng=seed), epochs=epochs, quiet=True)
    return model


def run_seed(args, data, seed: int) -> dict:
    x, y, xt, yt = data
    acc: dict = {}

    def record(name: str, model) -> None:
        acc[name] = evaluate(model, xt, yt)["accuracy"]
        if name != "CNN teacher":
            for dtype in ("qint8", "float16"):
                acc[f"{name}, dynamic {dtype}"] = evaluate(quant.quantize_dynamic(model, dtype=dtype), xt, yt)["accuracy"]
            per_channel = {t: quant.per_channel_dynamic_qconfig for t in (nn.GRU, nn.LSTM, nn.Linear)}
            acc[f"{name}, dynamic qint8 per-channel"] = evaluate(quant.quantize_dynamic(model, per_channel), xt,
                                                                 yt)["accuracy"]

    teacher = train(digits_cnn(rng=np.random.default_rng(10_000 + seed)), x, y, args, seed, args.teacher_epochs)
    record("CNN teacher", teacher)
    record("GRU alone", train(digits_rnn("GRU", args.hidden, rng=np.random.default_rng(seed)), x, y, args, seed,
                              args.epochs))
    kd = Distiller(KDLoss(T=args.T, alpha=args.alpha), optimizer=lambda p: Adam(p, lr=args.lr), epochs=args.epochs,
                   batch_size=args.batch_size, quiet=True, rng=seed)
    record("GRU, KD from the CNN", kd.fit(digits_rnn("GRU", args.hidden, rng=np.random.default_rng(seed)), x, y,
                                          teacher=teacher).student_)
    kd2 = Distiller(KDLoss(T=2.0, alpha=0.5), optimizer=lambda p: Adam(p, lr=args.lr), epochs=args.epochs,
                    batch_size=args.batch_size, quiet=True, rng=seed)
    record("GRU, KD (T=2, alpha=0.5)", kd2.fit(digits_rnn("GRU", args.hidden, rng=np.random.default_rng(seed)), x, y,
                                               teacher=teacher).student_)
    record("LSTM alone", train(digits_rnn("LSTM", args.hidden, rng=np.random.default_rng(seed)), x, y, args, seed,
                               args.epochs))
    acc["_params"] = {"CNN teacher": metrics.count_params(teacher),
                      "GRU": metrics.count_params(digits_rnn("GRU", args.hidden)),
                      "LSTM": metrics.count_params(digits_rnn("LSTM", args.hidden))}
    return acc


def main() -> None:
    args = parse_args()
    data = load_digits()
    start = time.perf_counter()
    runs = [run_seed(args, data, seed) for seed in range(args.seeds)]
    params = runs[0]["_params"]
    print(f"digits as 8 steps of 8 pixels: {len(data[0])} train / {len(data[2])} test, {args.seeds} seeds; "
          f"hidden {args.hidden}, {args.epochs} epochs (teacher {args.teacher_epochs}); params {params}; "
          f"KD T={args.T} alpha={args.alpha}")
    summary = {}
    for row in (k for k in runs[0] if not k.startswith("_")):
        v = np.array([r[row] for r in runs])
        summary[row] = {"mean": float(v.mean()), "per_seed": [float(a) for a in v]}
        print(f"{row:<40}{v.mean():>8.4f}   " + " ".join(f"{a:.4f}" for a in v))
    gain = np.array([r["GRU, KD from the CNN"] - r["GRU alone"] for r in runs])
    int8_drop = np.array([r[f"{m}, dynamic qint8"] - r[m] for r in runs
                          for m in ("GRU alone", "GRU, KD from the CNN", "GRU, KD (T=2, alpha=0.5)", "LSTM alone")])
    print(f"KD - alone (paired): {gain.mean():+.4f} (better on {(gain > 0).sum()}/{len(gain)} seeds); "
          f"int8 - float over every recurrent model and seed: min {int8_drop.min():+.4f}, "
          f"max {int8_drop.max():+.4f};  {time.perf_counter() - start:.0f} s")
    print(json.dumps({"bench": "digits_sequence", "seeds": args.seeds, "hidden": args.hidden, "epochs": args.epochs,
                      "teacher_epochs": args.teacher_epochs, "T": args.T, "alpha": args.alpha, "params": params,
                      "accuracy": summary, "kd_gain_mean": float(gain.mean()),
                      "int8_minus_float": [float(d) for d in int8_drop]}))


if __name__ == "__main__":
    main()
