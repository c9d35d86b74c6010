"""Distillation across architectures on the digits: ``python bench/distill.py --arch`` runs this.

Per seed and training split: a ResNet teacher ([2, 2, 2] BasicBlocks, widths 8/16/32, 3x3 stem) trained
on labels; then, each for the same epochs, Adam and batch size:
- a narrower ResNet ([2, 2, 2], widths 4/8/16) from labels ("scratch"), by KD, by KD + FitNets hint
  (student layer2 (8 ch) -> teacher layer2 (16 ch), 1x1-conv regressor; weight 100 as RepDistiller, and 1),
  by KD + attention transfer at all three stage outputs (weight 1000 as RepDistiller, whose 32x32 CIFAR
  maps make each squared difference ~16x smaller than our 8x8 ones, and 10), and by KD with the soft
  term dropped where the teacher is wrong or below 0.5 confident;
- a MobileNetV2 (width 0.5, rows (1,8,1,1), (2,16,2,2), (2,24,1,2)) and a ViT (patch 2, 2 layers, 2
  heads, width 32) from labels and by KD;
- students initialised from the teacher and fine-tuned on labels: one block in two
  (``student_from_teacher(every=2)``: ResNet [1, 1, 1], widths 8/16/32), against the same
  architecture from a random init; the teacher channel-pruned by half (``amount=0.5``: the narrow
  ResNet's widths), against the narrow scratch student. For these: the epoch at which test accuracy
  first reaches the random student's final accuracy.
"""
from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from minicompress import metrics, models
from minicompress.data import DataLoader, load_digits
from minicompress.distill import ATLoss, Distiller, HintLoss, KDLoss, student_from_teacher, teacher_weights
from minicompress.nn.losses import CrossEntropyLoss
from minicompress.optim import Adam
from minicompress.train import evaluate, fit, predict

STAGES = ("layer1", "layer2", "layer3")


def resnet(layers: list[int], widths: tuple[int, ...], seed: int) -> models.ResNet:
    return models.ResNet(models.BasicBlock, layers, 10, in_channels=1, small_input=True, widths=widths,
                         rng=np.random.default_rng(seed))


def mobilenet(seed: int) -> models.MobileNetV2:
    rows = [[1, 8, 1, 1], [2, 16, 2, 2], [2, 24, 1, 2]]                  # t, c, n, s
    return models.mobilenet_v2(10, width_mult=0.5, inverted_residual_setting=rows,
                               in_channels=1, small_input=True, rng=np.random.default_rng(seed))


def vit(seed: int) -> models.VisionTransformer:
    return models.VisionTransformer(8, 2, 2, 2, 32, 64, num_classes=10, in_channels=1, rng=np.random.default_rng(seed))


class TestAccuracy:
    """A fit callback: test accuracy after every epoch (``self.curve``)."""

    def __init__(self, model, xt, yt) -> None:
        self.model, self.xt, self.yt, self.curve = model, xt, yt, []

    def on_epoch_end(self, epoch: int, model: Any, optimizer: Any, logs: dict) -> None:
        self.curve.append(evaluate(self.model, self.xt, self.yt)["accuracy"])


def labels(model, x, y, xt, yt, args, seed: int) -> list[float]:
    """Train on labels; the test accuracy curve."""
    curve = TestAccuracy(model, xt, yt)
    fit(model, CrossEntropyLoss(), Adam(model.parameters(), lr=args.lr), DataLoader(x, y, args.batch_size,
        shuffle=True, rng=seed), epochs=args.epochs, quiet=True, callbacks=[curve])
    return curve.curve


def distil(student, teacher, x, y, args, seed: int, kd: KDLoss | None = None, **features: Any):
    Distiller(kd or KDLoss(T=args.T, alpha=args.alpha), optimizer=lambda p: Adam(p, lr=args.lr), epochs=args.epochs,
              batch_size=args.batch_size, quiet=True, rng=seed, **features).fit(student, x, y, teacher=teacher)
    return student


def run_seed(args, x, y, xt, yt, seed: int) -> dict[str, Any]:
    acc: dict[str, Any] = {}
    teacher = resnet([2, 2, 2], (8, 16, 32), 10_000 + seed)
    fit(teacher, CrossEntropyLoss(), Adam(teacher.parameters(), lr=args.teacher_lr),
        DataLoader(x, y, args.batch_size, shuffle=True, rng=seed), epochs=args.teacher_epochs, quiet=True)
    teacher.eval()
    acc["teacher ResNet 8/16/32 [2,2,2]"] = evaluate(teacher, xt, yt)["accuracy"]

    def narrow():
        return resnet([2, 2, 2], (4, 8, 16), seed)
    scratch_curve = labels(narrow(), x, y, xt, yt, args, seed)
    acc["narrow ResNet 4/8/16: scratch"] = scratch_curve[-1]
    acc["narrow ResNet: KD"] = evaluate(distil(narrow(), teacher, x, y, args, seed), xt, yt)["accuracy"]
    for weight in (100.0, 1.0):
        acc[f"narrow ResNet: KD + hint (layer2, weight {weight:g})"] = evaluate(distil(
            narrow(), teacher, x, y, args, seed, feature_loss=HintLoss(8, 16, rng=seed), student_layer="layer2",
            teacher_layer="layer2", feature_weight=weight), xt, yt)["accuracy"]
    for weight in (1000.0, 10.0):
        acc[f"narrow ResNet: KD + AT (3 stages, weight {weight:g})"] = evaluate(distil(
            narrow(), teacher, x, y, args, seed, feature_loss=[ATLoss() for _ in STAGES], student_layer=list(STAGES),
            teacher_layer=list(STAGES), feature_weight=weight), xt, yt)["accuracy"]
    trust = KDLoss(T=args.T, alpha=args.alpha, confidence_threshold=0.5, drop_wrong_teacher=True)
    acc["_trusted_fraction"] = trusted_fraction(teacher, x, y)
    acc["narrow ResNet: KD, trusted teacher only"] = evaluate(distil(narrow(), teacher, x, y, args, seed, kd=trust),
                                                              xt, yt)["accuracy"]
    acc["MobileNetV2: scratch"] = labels(mobilenet(seed), x, y, xt, yt, args, seed)[-1]
    acc["MobileNetV2: KD"] = evaluate(distil(mobilenet(seed), teacher, x, y, args, seed), xt, yt)["accuracy"]
    acc["ViT: scratch"] = labels(vit(seed), x, y, xt, yt, args, seed)[-1]
    acc["ViT: KD"] = evaluate(distil(vit(seed), teacher, x, y, args, seed), xt, yt)["accuracy"]

    shallow_curve = labels(resnet([1, 1, 1], (8, 16, 32), seed), x, y, xt, yt, args, seed)
    acc["shallow ResNet 8/16/32 [1,1,1]: scratch"] = shallow_curve[-1]
    blocks = student_from_teacher(teacher, every=2)
    acc["_blocks_at_init"] = evaluate(blocks, xt, yt)["accuracy"]
    blocks_curve = labels(blocks, x, y, xt, yt, args, seed)
    acc["shallow ResNet: init from teacher (every 2nd block)"] = blocks_curve[-1]
    pruned = student_from_teacher(teacher, amount=0.5, example_input=x[:8])
    acc["_pruned_at_init"] = evaluate(pruned, xt, yt)["accuracy"]
    pruned_curve = labels(pruned, x, y, xt, yt, args, seed)
    acc["narrow ResNet: init from teacher (channel-pruned)"] = pruned_curve[-1]
    acc["_epochs_blocks"] = first_epoch(blocks_curve, shallow_curve[-1])
    acc["_epochs_pruned"] = first_epoch(pruned_curve, scratch_curve[-1])
    acc["_curves"] = {"shallow scratch": shallow_curve, "shallow init": blocks_curve, "narrow scratch": scratch_curve,
                      "narrow init (pruned)": pruned_curve}
    acc["_params"] = {"teacher": metrics.count_params(teacher), "narrow": metrics.count_params(narrow()),
                      "mobilenet": metrics.count_params(mobilenet(seed)), "vit": metrics.count_params(vit(seed)),
                      "shallow": metrics.count_params(blocks), "pruned": metrics.count_params(pruned)}
    return acc


def trusted_fraction(teacher, x, y) -> float:
    """Fraction of training samples whose soft term the trusted-teacher KD keeps (right and >= 0.5 sure)."""
    return float(teacher_weights(predict(teacher, x), y, 0.5, True).mean())


def first_epoch(curve: list[float], target: float) -> int | None:
    """The first epoch (1-based) whose test accuracy reaches ``target``, or None."""
    return next((i + 1 for i, a in enumerate(curve) if a >= target - 1e-12), None)


def main(args) -> None:
    x, y, xt, yt = load_digits()
    n = int(round(args.train_fraction * len(x)))
    x, y = x[:n], y[:n]
    start = time.perf_counter()
    runs = [run_seed(args, x, y, xt, yt, seed) for seed in range(args.seeds)]
    rows = [k for k in runs[0] if not k.startswith("_")]
    print(f"digits: {n} train / {len(xt)} test, seeds 0..{args.seeds - 1}, {args.epochs} student epochs, "
          f"teacher {args.teacher_epochs} epochs; KD T={args.T} alpha={args.alpha}; params {runs[0]['_params']}")
    summary = {}
    for row in rows:
        v = np.array([r[row] for r in runs])
        summary[row] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                        "per_seed": [float(a) for a in v]}
        print(f"{row:<54}{100 * v.mean():6.1f} +- {100 * summary[row]['std']:.1f}   "
              + " ".join(f"{100 * a:.1f}" for a in v))
    for key, what in (("blocks", "every 2nd block"), ("pruned", "channel-pruned")):
        at_init = [100 * r[f"_{key}_at_init"] for r in runs]
        epochs = [r[f"_epochs_{key}"] for r in runs]
        summary[f"init {what}"] = {"accuracy_before_fine_tuning": at_init, "epochs_to_random_final": epochs}
        print(f"init from teacher ({what}): test accuracy before fine-tuning {at_init}; epochs to reach the random "
              f"student's final accuracy {epochs} (of {args.epochs})")
    print(f"trusted-teacher KD keeps the soft term of {[round(100 * r['_trusted_fraction'], 1) for r in runs]} % of "
          f"the training samples (teacher right and >= 0.5 sure)")
    print(f"{time.perf_counter() - start:.0f} s")
    print(json.dumps({"bench": "distill-arch", "train": n, "seeds": args.seeds, "epochs": args.epochs,
                      "teacher_epochs": args.teacher_epochs, "T": args.T, "alpha": args.alpha, "lr": args.lr,
                      "params": runs[0]["_params"], "accuracy": summary,
                      "trusted_fraction": [r["_trusted_fraction"] for r in runs],
                      "curves": [r["_curves"] for r in runs]}))
