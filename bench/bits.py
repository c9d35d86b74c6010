"""Size and accuracy of the digits models at 32, 16, 8 and 4 bits (issue 19's table).

Per seed, the digits CNN and MLP trained on labels, then stored as:

- float32: the trained model (``io.save``: bytes of the .npz model file);
- float16: ``model.half()`` (float16 storage, float32 compute per layer, one rounding per layer; inputs float16);
- int8: the CNN statically quantized (fuse, x86 qconfig = per-channel weights, calibrated on the training
  split, convert); the MLP dynamically (``quantize_dynamic``: int8 weights, activations per batch);
- 4-bit: weight-only, per output channel, symmetric codes -8..7 (scale = max|w| / 7.5), the float model
  run with the dequantized weights. There is no 4-bit kernel or file format, so its size is *computed*:
  half a byte per weight, a float32 scale per channel, every other tensor float32.

    python bench/bits.py                  # the table in bench/README.md (3 seeds, ~2 min)

Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np

from minicompress import io, models, nn
from minicompress import quant as Q
from minicompress.data import DataLoader, load_digits
from minicompress.nn.losses import CrossEntropyLoss
from minicompress.optim import Adam
from minicompress.train import evaluate, fit


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20)
    return p.parse_args()


def file_bytes(model: nn.Module) -> int:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.npz"
        io.save(model, path)
        return path.stat().st_size


def four_bit(model: nn.Module) -> tuple[nn.Module, int]:
    """Weight-only 4-bit copy (module docstring) and its computed size in bytes."""
    import copy
    out = copy.deepcopy(model)
    nbytes = 0
    for name, p in out.named_parameters():
        w = p.data
        if name.endswith("weight") and w.ndim >= 2:
            flat = w.reshape(w.shape[0], -1)
            scale = np.maximum(np.abs(flat).max(axis=1), 1e-12) / 7.5
            codes = np.clip(np.rint(flat / scale[:, None]), -8, 7)
            p.data = (codes * scale[:, None]).reshape(w.shape).astype(w.dtype)
            nbytes += (w.size + 1) // 2 + 4 * w.shape[0]
        else:
            nbytes += 4 * w.size
    nbytes += sum(4 * b.size for _, b in out.named_buffers() if b is not None and b.dtype.kind == "f")
    return out, nbytes


def static_int8_cnn(cnn: nn.Module, x: np.ndarray) -> nn.Module:
    model = nn.Sequential(Q.QuantStub(), *cnn, Q.DeQuantStub()).eval()
    fused = Q.fuse_modules(model, [["1", "2", "3"], ["4", "5", "6"], ["9", "10"]])
    fused.qconfig = Q.get_default_qconfig("x86")
    prepared = Q.prepare(fused)
    with nn.no_grad():
        prepared(x)
    return Q.convert(prepared)


def run_seed(seed: int, epochs: int, data: tuple) -> list[dict]:
    x, y, xt, yt = data
    rows = []
    for name, make in (("digits CNN", lambda: models.digits_cnn(rng=np.random.default_rng(seed))),
                       ("digits MLP", lambda: models.digits_mlp((128,), rng=np.random.default_rng(seed)))):
        model = make()
        fit(model, CrossEntropyLoss(), Adam(model.parameters(), lr=3e-3),
            DataLoader(x, y, 64, shuffle=True, rng=seed), epochs=epochs, quiet=True)
        model.eval()
        int8 = static_int8_cnn(model, x) if name == "digits CNN" else Q.quantize_dynamic(model)
        small, small_bytes = four_bit(model)
        import copy
        half = copy.deepcopy(model).half()
        variants = [("32-bit float", model, file_bytes(model), xt),
                    ("16-bit float (half)", half, file_bytes(half), xt.astype(np.float16)),
                    ("8-bit int (" + ("static" if name == "digits CNN" else "dynamic") + ")", int8, file_bytes(int8), xt),
                    ("4-bit weights (simulated, computed size)", small, small_bytes, xt)]
        for variant, m, size, inputs in variants:
            rows.append({"model": name, "variant": variant, "seed": seed, "bytes": size,
                         "accuracy": evaluate(m, inputs, yt)["accuracy"]})
    return rows


def main() -> None:
    args = parse_args()
    data = load_digits()
    start = time.perf_counter()
    rows = [r for seed in range(args.seeds) for r in run_seed(seed, args.epochs, data)]
    print(f"digits, {args.seeds} seeds, {args.epochs} epochs")
    print(f"{'model':<12}{'variant':<44}{'bytes':>9}{'x smaller':>11}{'accuracy (mean)':>17}   per seed")
    summary = []
    for model in dict.fromkeys(r["model"] for r in rows):
        base = np.mean([r["bytes"] for r in rows if r["model"] == model and r["variant"] == "32-bit float"])
        for variant in dict.fromkeys(r["variant"] for r in rows if r["model"] == model):
            sel = [r for r in rows if r["model"] == model and r["variant"] == variant]
            size, acc = float(np.mean([r["bytes"] for r in sel])), [r["accuracy"] for r in sel]
            summary.append({"model": model, "variant": variant, "bytes": size, "ratio": base / size,
                            "accuracy_mean": float(np.mean(acc)), "accuracy_per_seed": acc})
            print(f"{model:<12}{variant:<44}{size:>9.0f}{base / size:>10.2f}x{np.mean(acc):>17.4f}   "
                  + " ".join(f"{a:.4f}" for a in acc))
    print(f"{time.perf_counter() - start:.0f} s")
    print(json.dumps({"bench": "bits", "seeds": args.seeds, "epochs": args.epochs, "rows": summary}))


if __name__ == "__main__":
    main()
