"""The ``minicompress`` command.

Exit codes: 0 success, 1 failure (a clear message on stderr), 2 usage error (argparse).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence


def _cmd_train(args: argparse.Namespace) -> int:
    import numpy as np

    from . import manual_seed, metrics, models, optim
    from .data import DataLoader, load_digits
    from .nn.losses import CrossEntropyLoss
    from .train import evaluate, fit

    _check_train_args(args)
    rng = manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load_digits()
    model = models.digits_cnn(rng=rng) if args.model == "cnn" else models.digits_mlp(rng=rng)
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    loader = DataLoader(x_train, y_train, batch_size=args.batch_size, shuffle=True, rng=rng)
    start = time.perf_counter()
    history = fit(model, CrossEntropyLoss(), optimizer, loader, epochs=args.epochs,
                  scheduler=scheduler, quiet=args.quiet or args.json)
    seconds = time.perf_counter() - start
    result = evaluate(model, x_test, y_test)
    summary = {
        "model": args.model, "epochs": args.epochs, "seed": args.seed,
        "test_accuracy": result["accuracy"], "test_loss": result["loss"],
        "train_loss": history["loss"][-1] if history["loss"] else None,
        "params": metrics.count_params(model), "bytes": metrics.model_size_bytes(model),
        "macs_per_sample": metrics.count_macs(model, x_test.shape[1:]),
        "train_seconds": round(seconds, 3),
    }
    if args.out:
        from . import io
        io.save(model, args.out)
        summary["saved_to"] = args.out
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{args.model} on digits: test accuracy {summary['test_accuracy']:.4f}, "
              f"{summary['params']:,} parameters ({summary['bytes']:,} bytes), "
              f"{summary['macs_per_sample']:,} MACs/sample, trained in {seconds:.1f} s")
    return 0 if np.isfinite(result["loss"]) else 1


def _check_train_args(args: argparse.Namespace) -> None:
    """Every argument of ``train`` checked before training (a bad --out must not cost the training)."""
    import math
    from pathlib import Path

    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be a finite number > 0, got {args.lr}")
    if not 0 <= args.seed < 2 ** 63:
        raise ValueError(f"--seed must be in [0, 2**63), got {args.seed}")
    if args.out is not None:
        out = Path(args.out)
        if args.out.strip() == "" or out.is_dir():
            raise ValueError(f"--out must name a model file (.npz), got {args.out!r}")
        if not out.absolute().parent.is_dir():
            raise FileNotFoundError(f"--out {args.out}: the directory {out.absolute().parent} does not exist")


def _cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import format_table, run
    from .recipe import load_recipe

    recipe = load_recipe(args.recipe)
    if args.data is not None:
        recipe["data"]["source"] = args.data
    quiet = args.quiet or args.json
    report = run(recipe, args.out, quiet=quiet, log=(lambda _: None) if quiet else print, model=args.model,
                 arch=args.arch, export_onnx=args.export_onnx)
    failed = args.export_onnx is not None and report.get("onnx") is None
    if args.json:
        print(json.dumps(report))
        return 1 if failed else 0
    print()
    print(format_table(report["stages"]))
    print(f"\nwrote {args.out}/report.json, report.md and one model file per stage in {report['seconds']:.1f} s")
    if report.get("plot") is None:
        print("no plot: install matplotlib (pip install 'minicompress[plot]') for accuracy_vs_size.png")
    if failed:
        print(f"final.onnx NOT written (the rest of the run is): {report['onnx_error']}", file=sys.stderr)
        return 1
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from . import io

    print(io.describe(args.file))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_onnx, format_comparison

    result = compare_onnx(args.model, args.inputs, optimized=not args.literal, seed=args.seed)
    print(json.dumps(result) if args.json else format_comparison(result))
    return 0 if result["agree"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minicompress",
                                     description="Pure-NumPy neural-network compression: prune, quantize, distill.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a small CNN (or MLP) on the bundled digits",
                       description="Train a small network on the bundled 8x8 digits and report accuracy, size and time.")
    p.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="save the trained model to this file (.npz model file)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("run", help="the compression pipeline: teacher, distilled student, pruned, int8",
                       description="Train a teacher CNN, distill a smaller student, prune it (channel surgery + "
                                   "gradual magnitude pruning), quantize it to int8 and report every stage.")
    p.add_argument("--recipe", help="a TOML recipe (defaults: minicompress/recipes/default.toml)")
    p.add_argument("--data", help="'digits' (bundled) or an .npz with x_train, y_train, x_test, y_test")
    p.add_argument("--out", default="runs/latest", help="output directory (default: runs/latest)")
    p.add_argument("--model", help="your own model as the teacher (not trained): .onnx, a minicompress model file, "
                                   "or a state dict (.pt/.pth/.npz/.safetensors) with --arch")
    p.add_argument("--arch", help="the architecture of a --model state dict: cnn, mlp, resnet18 (/34/50/20/32/56), "
                                  "mobilenet_v2, vit (other arguments from the recipe's teacher table)")
    p.add_argument("--export-onnx", nargs="?", const="qdq", choices=("qdq", "qoperator"), default=None,
                   help="also write the final model as DIR/final.onnx (int8 as QDQ, the default, or QOperator; "
                        "needs the [onnx] extra)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("inspect", help="print the layers, shapes, dtypes, sparsity and size of a model or state-dict file",
                       description="Describe a minicompress model file, .npz, .safetensors or PyTorch .pt/.pth file.")
    p.add_argument("file", help="the file to describe")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("compare", help="run an (int8) ONNX model in minicompress and in onnxruntime, node by node",
                       description="Per ONNX value: max |difference|, share of differing codes and which rounding "
                                   "rule explains a difference. Exit code 0 if every value agrees exactly, else 1.")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--inputs", help="an .npz whose keys are the model's input names (default: random data)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--optimized", action="store_true", help="QDQ groups fused, against onnxruntime's default "
                                                               "graph optimisations (the default)")
    mode.add_argument("--literal", action="store_true", help="every node as written, against ORT_DISABLE_ALL")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=_cmd_compare)

    from .sweep.command import add_sweep_parser
    add_sweep_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__
        print(__version__)
        return 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, FloatingPointError, OSError, ImportError) as exc:
        print(f"minicompress {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
