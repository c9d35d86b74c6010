"""Does pruning pay? Accuracy on the digits, and real speed from channel surgery and sparse kernels.

1. Accuracy (bundled 8x8 digits, 1438 train / 359 test):
   - the digits MLP (64-128(BN)-10) and CNN, seeds 0-2, trained (``--epochs``), then 90 % of their
     weights pruned gradually (Zhu & Gupta schedule over 10 epochs of SGD, global magnitude ranking) and
     fine-tuned 20 epochs (Adam 1e-3, cosine): test accuracy before / after; for the CNN also the same
     schedule with the fine-tune distilled from the dense model (KDLoss T=4, alpha=0.9, Adam 1e-3,
     20 epochs), over seeds 0 and 1.
   - CNN with 50 % of its channels removed by ``channel_prune`` (l1), fine-tuned: MACs, params,
     accuracy before / after, and its measured speed-up.
2. Latency of the trained CNN after ``channel_prune`` at 0.25 / 0.5 / 0.75, next to the dense model
   and to the dense model with the same fraction of weights masked (unstructured: zeros, no speed),
   in minicompress and in PyTorch eager (same architecture and weights, same threads). Each variant
   is timed interleaved with the dense model, and its speed-up is dense time / its time.
4. Channel-importance criteria on the trained CNN (half of each group's channels removed by ``channel_prune``,
   then 5 epochs of fine-tuning): L1 / L2 group magnitude, BN scale, first-order Taylor (one backward over
   512 training digits), APoZ and mean activation after the ReLUs (``activation_importance`` on 512 digits),
   random; accuracy before and after the fine-tune.
3. The Numba CSR kernel (``SparseLinear``) vs dense NumPy ``x @ W.T`` on a 1024x1024 weight at
   50 / 80 / 90 / 95 % sparsity, batch 1 and 64.

Each time is the median per call over interleaved rounds of ~``--seconds`` each. Prints tables and
one JSON line.

    python bench/prune.py [--threads N] [--seconds S] [--epochs E]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="BLAS / PyTorch threads")
    parser.add_argument("--seconds", type=float, default=0.1, help="length of one timing round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per measurement")
    parser.add_argument("--epochs", type=int, default=15, help="training epochs of the dense models")
    parser.add_argument("--importance-only", action="store_true",
                        help="train the dense CNN and run only the importance-criteria section")
    return parser.parse_args()


ARGS = _parse()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import minicompress as mc  # noqa: E402
from minicompress import data, metrics, models, optim, prune, train  # noqa: E402
from minicompress.nn.losses import CrossEntropyLoss  # noqa: E402
from minicompress.prune.kernels import csr_matmul, dense_to_csr  # noqa: E402


def timed_rounds(fns: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median seconds per call of each fn, measured in interleaved rounds after a warm-up."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        for _ in range(3):
            fn()
    for _ in range(ARGS.rounds):
        for name, fn in fns.items():
            end = time.perf_counter() + ARGS.seconds
            while True:
                start = time.perf_counter()
                fn()
                stop = time.perf_counter()
                samples[name].append(stop - start)
                if stop > end:
                    break
    return {name: statistics.median(times) for name, times in samples.items()}


def to_torch(model: mc.nn.Module) -> torch.nn.Sequential:
    """The same chain of layers in PyTorch, with the same (effective) weights."""
    layers = []
    for m in model.children():
        kind = type(m).__name__
        if kind == "Conv2d":
            layers.append(torch.nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                          m.dilation, m.groups, bias=m.array("bias") is not None))
        elif kind == "Linear":
            layers.append(torch.nn.Linear(m.in_features, m.out_features, bias=m.array("bias") is not None))
        elif kind == "BatchNorm2d":
            layers.append(torch.nn.BatchNorm2d(m.num_features, eps=m.eps))
        elif kind == "MaxPool2d":
            layers.append(torch.nn.MaxPool2d(m.kernel_size))
        else:
            layers.append(getattr(torch.nn, kind)())
    theirs = torch.nn.Sequential(*layers)
    state = dict(prune.bake_pruning(_copy(model)).state_dict())
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return theirs.eval()


def _copy(model):
    return copy.deepcopy(model)


def _fit(model, epochs, lr=0.05, callbacks=(), seed=0):
    x, y = DIGITS[0], DIGITS[1]
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    loader = data.DataLoader(x, y, batch_size=64, shuffle=True, rng=np.random.default_rng(seed))
    train.fit(model, CrossEntropyLoss(), opt, loader, epochs=epochs, callbacks=callbacks, quiet=True)
    return model


def _fine_tune(model, epochs):
    """Adam 1e-3 with a cosine schedule: masked weights stay zero (the masks are re-applied every forward)."""
    opt = optim.Adam(model.parameters(), lr=1e-3)
    loader = data.DataLoader(DIGITS[0], DIGITS[1], batch_size=64, shuffle=True, rng=np.random.default_rng(2))
    train.fit(model, CrossEntropyLoss(), opt, loader, epochs=epochs,
              scheduler=optim.lr_scheduler.CosineAnnealingLR(opt, epochs), quiet=True)
    return model


def _kd_prune(dense, steps_per_epoch, epochs=20):
    """90 % gradual global pruning while distilling from the dense model (Adam, cosine)."""
    from minicompress.distill import Distiller, KDLoss

    sparse = _copy(dense)
    gradual = prune.GradualPruning(0.9, frequency=steps_per_epoch, n_steps=10, scope="global",
                                   targets=prune.prunable_weights(sparse))
    Distiller(KDLoss(T=4.0, alpha=0.9), optimizer=lambda p: optim.Adam(p, lr=1e-3),
              scheduler=lambda o: optim.lr_scheduler.CosineAnnealingLR(o, epochs), epochs=epochs,
              callbacks=[gradual], quiet=True, rng=np.random.default_rng(1)).fit(sparse, DIGITS[0], DIGITS[1],
                                                                                  teacher=dense)
    return sparse


def _acc(model) -> float:
    return train.evaluate(model, DIGITS[2], DIGITS[3])["accuracy"]


def accuracy_section() -> tuple[list, dict, mc.nn.Module]:
    rows, out = [], {}
    steps_per_epoch = int(np.ceil(len(DIGITS[0]) / 64))
    dense_cnns = {}                                  # seed -> trained dense CNN, reused below
    for name, build in (("MLP 64-128(BN)-10", models.digits_mlp), ("CNN conv16-conv32-fc64", models.digits_cnn)):
        for seed in (0, 1, 2):
            dense = _fit(build(rng=np.random.default_rng(seed)), ARGS.epochs, seed=seed)
            base = _acc(dense)
            if name.startswith("CNN"):
                dense_cnns[seed] = dense
            sparse = _copy(dense)
            gradual = prune.GradualPruning(0.9, frequency=steps_per_epoch, n_steps=9, scope="global")
            _fit(sparse, 10, lr=0.03, callbacks=[gradual], seed=1)   # prune to 90 % over 10 epochs (SGD) ...
            _fine_tune(sparse, 20)                                      # ... then fine-tune (Adam, cosine)
            report = prune.sparsity_report(sparse, weights_only=True)["total"]
            rows.append((f"{name} seed {seed}: 90% weights pruned (gradual, global)", base, _acc(sparse),
                         f"{report['numel'] / report['nonzeros']:.1f}x fewer weights"))
            out[f"{name.split()[0].lower()}_90pct_seed{seed}"] = {
                "dense": base, "pruned": _acc(sparse), "weight_sparsity": round(report["sparsity"], 4)}
    trained_cnn = dense_cnns[0]
    for seed in (0, 1):
        dense = dense_cnns[seed]
        sparse = _kd_prune(dense, steps_per_epoch)
        rows.append((f"CNN seed {seed}: 90% pruned, KD fine-tune", _acc(dense), _acc(sparse), "teacher = dense model"))
        out[f"cnn_90pct_kd_seed{seed}"] = {"dense": _acc(dense), "pruned": _acc(sparse)}
    x_test = DIGITS[2]
    small = prune.channel_prune(trained_cnn, x_test[:8], 0.5)
    before_ft = _acc(small)
    _fit(small, 5, lr=0.01, seed=3)
    macs = metrics.count_macs(trained_cnn, (1, 8, 8)), metrics.count_macs(small, (1, 8, 8))
    params = metrics.count_params(trained_cnn), metrics.count_params(small)
    trained_cnn.eval(), small.eval()
    t = timed_rounds({"dense": lambda: _infer(trained_cnn, x_test), "small": lambda: _infer(small, x_test)})
    rows.append(("CNN: 50% channels removed (l1), fine-tuned", _acc(trained_cnn), _acc(small),
                 f"MACs {macs[0] / macs[1]:.2f}x fewer, params {params[0] / params[1]:.2f}x fewer, "
                 f"{t['dense'] / t['small']:.2f}x faster (batch {len(x_test)}); before fine-tune {before_ft:.3f}"))
    out["cnn_channels_50pct"] = {"dense": _acc(trained_cnn), "pruned_no_finetune": before_ft,
                                 "pruned": _acc(small), "macs_ratio": round(macs[0] / macs[1], 3),
                                 "params_ratio": round(params[0] / params[1], 3),
                                 "speedup": round(t["dense"] / t["small"], 3)}
    return rows, out, trained_cnn


def importance_section(cnn: mc.nn.Module) -> tuple[list, dict]:
    """Each criterion on copies of the same trained CNN (module docstring, section 4)."""
    x_train, y_train, x_test = DIGITS[0], DIGITS[1], DIGITS[2]
    with_grads = _copy(cnn).train()
    loss = CrossEntropyLoss()
    loss(with_grads(x_train[:512]), y_train[:512])
    with_grads.backward(loss.backward())
    criteria = {
        "l1": "l1", "l2": "l2", "bn_scale": "bn_scale", "taylor": "taylor",
        "apoz": prune.activation_importance(cnn, [x_train[:512]], criterion="apoz"),
        "mean activation": prune.activation_importance(cnn, [x_train[:512]], criterion="mean"),
        "random": prune.RandomImportance(rng=0),
    }
    rows, out = [], {}
    for name, importance in criteria.items():
        source = with_grads if name == "taylor" else cnn
        small = prune.channel_prune(source, x_test[:8], 0.5, importance)
        before = _acc(small)
        _fit(small, 5, lr=0.01, seed=3)
        rows.append((name, before, _acc(small)))
        out[name] = {"before_finetune": before, "after_finetune": _acc(small)}
    return rows, out


def _infer(model, x):
    with mc.no_grad():
        return model(x)


def _infer_torch(model, x):
    with torch.no_grad():
        return model(x)


def latency_section(cnn: mc.nn.Module) -> tuple[list, dict]:
    rows, out = [], {}
    for batch in (1, 64):
        x = DIGITS[2][:batch]
        xt = torch.from_numpy(x)
        variants = [("dense", cnn)]
        for amount in (0.25, 0.5, 0.75):
            small = prune.channel_prune(cnn, x, amount)
            variants.append((f"channels -{amount:.0%}", small))
            sparsity = 1 - metrics.count_params(small) / metrics.count_params(cnn)
            masked = _copy(cnn)
            prune.global_unstructured(prune.prunable_weights(masked), prune.L1Unstructured, amount=sparsity)
            variants.append((f"masked {sparsity:.0%} weights", masked))
        dense_theirs = to_torch(cnn)
        for label, model in variants:  # each variant timed interleaved with the dense model
            model.eval()
            theirs = to_torch(model)
            t = timed_rounds({"dense_ours": lambda: _infer(cnn, x), "ours": lambda: _infer(model, x),
                              "dense_theirs": lambda: _infer_torch(dense_theirs, xt),
                              "theirs": lambda: _infer_torch(theirs, xt)})
            speed_ours, speed_theirs = t["dense_ours"] / t["ours"], t["dense_theirs"] / t["theirs"]
            rows.append((batch, label, metrics.count_macs(model, (1, 8, 8)), t["ours"], t["theirs"],
                         speed_ours, speed_theirs))
            out[f"b{batch}_{label}"] = {"speedup_minicompress": round(speed_ours, 3),
                                        "speedup_pytorch": round(speed_theirs, 3),
                                        "ratio_minicompress_over_pytorch": round(t["ours"] / t["theirs"], 3)}
    return rows, out


def sparse_kernel_section() -> tuple[list, dict]:
    rows, out = [], {}
    rng = np.random.default_rng(0)
    n = 1024
    for sparsity in (0.5, 0.8, 0.9, 0.95):
        w = (rng.standard_normal((n, n)) * (rng.random((n, n)) >= sparsity)).astype(np.float32)
        csr = dense_to_csr(w)
        for batch in (1, 64):
            x = rng.standard_normal((batch, n)).astype(np.float32)
            t = timed_rounds({"dense": lambda: x @ w.T, "csr": lambda: csr_matmul(x, *csr)})
            rows.append((sparsity, batch, t["dense"], t["csr"], t["dense"] / t["csr"]))
            out[f"s{int(sparsity * 100)}_b{batch}"] = round(t["dense"] / t["csr"], 3)
    return rows, out


def main() -> None:
    torch.set_num_threads(ARGS.threads)
    global DIGITS
    DIGITS = data.load_digits()
    print(f"threads: {ARGS.threads} (BLAS env vars and torch.set_num_threads); numpy {np.__version__}, "
          f"torch {torch.__version__}, {platform.machine()}, python {sys.version.split()[0]}; "
          f"{ARGS.epochs} training epochs\n")

    if ARGS.importance_only:
        cnn = _fit(models.digits_cnn(rng=np.random.default_rng(0)), ARGS.epochs)
        imp_rows, imp_json = importance_section(cnn.eval())
        print(f"dense CNN {_acc(cnn):.3f}; half of each group's channels removed:")
        print(f"{'importance':<16} {'before fine-tune':>16} {'after 5 epochs':>14}")
        for name, before, after in imp_rows:
            print(f"{name:<16} {before:>16.3f} {after:>14.3f}")
        print(json.dumps({"bench": "prune_importance", "dense": _acc(cnn), "importance": imp_json}))
        return
    acc_rows, acc_json, cnn = accuracy_section()
    width = max(len(r[0]) for r in acc_rows)
    print(f"{'experiment':<{width}} {'dense acc':>9} {'pruned acc':>10}  notes")
    for label, dense, pruned, note in acc_rows:
        print(f"{label:<{width}} {dense:>9.3f} {pruned:>10.3f}  {note}")

    lat_rows, lat_json = latency_section(cnn)
    print(f"\n{'batch':>5} {'model':<22} {'MACs':>8} {'minicompress ms':>15} {'PyTorch ms':>10} "
          f"{'speed-up mc':>11} {'speed-up pt':>11} {'mc/pt':>6}")
    for batch, label, macs, ours, theirs, s_ours, s_theirs in lat_rows:
        print(f"{batch:>5} {label:<22} {macs:>8} {ours * 1e3:>15.3f} {theirs * 1e3:>10.3f} "
              f"{s_ours:>11.2f} {s_theirs:>11.2f} {ours / theirs:>6.2f}")

    kern_rows, kern_json = sparse_kernel_section()
    print(f"\n{'sparsity':>8} {'batch':>5} {'dense x@W.T ms':>14} {'CSR kernel ms':>13} {'speed-up':>8}"
          "   (W 1024x1024)")
    for sparsity, batch, dense, csr, ratio in kern_rows:
        print(f"{sparsity:>8.0%} {batch:>5} {dense * 1e3:>14.4f} {csr * 1e3:>13.4f} {ratio:>8.2f}")

    print(json.dumps({"bench": "prune", "threads": ARGS.threads, "accuracy": acc_json, "latency": lat_json,
                      "csr_speedup_over_dense": kern_json}))


if __name__ == "__main__":
    main()
