"""int8 of the real architectures on the digits: accuracy, file size and speed, ours and PyTorch's side by side.

Models trained with the recipe of ``bench/architectures.py`` (``bench/digits_training.py``: AdamW lr 2e-3,
weight decay 0.01, cosine, 30 epochs, batch 64; cached). Then, for each model and seed:

- ResNet-20 and MobileNetV2 (width 0.5, stride-1 stem, ReLU throughout as torchvision's quantizable
  MobileNetV2 after ``_replace_relu``: trained with ReLU from the start): static int8, ``fuse_model()`` ->
  ``prepare`` (x86 qconfig: HistogramObserver activations with reduce_range, per-channel weights) -> calibrate
  on the first 512 training images (8 batches of 64) -> ``convert``. PyTorch's twin of torchvision's
  quantizable model gets the same weights and the same calibration batches.
- ViT (patch 2, 4 layers, width 64): dynamic int8 of every ``nn.Linear`` (``quantize_dynamic``; attention's
  in-projection and ``out_proj`` stay float, as PyTorch's); static int8 of the Linear layers only
  (``QuantWrapper`` around each, LayerNorm / attention / GELU float), of the MLP and head Linears only (as
  PyTorch's ``add_quant_dequant`` recipe can, side by side); the same keeping the two layers of lowest
  SQNR (``layer_sensitivity``) float; and QAT of the MLP and head Linear layers (3 epochs, AdamW lr 1e-4).
- Where static PTQ of a CNN is more than 0.5 points below float, also QAT (``conv_qat_int8``, 3 epochs).

File sizes: ``io.save`` (compressed npz); PyTorch's: ``torch.save(state_dict)``. Latency: best of repeated
calls at batch 64 and batch 1, ours float / ours int8 / PyTorch float / PyTorch int8 in the same run, one thread.

    python bench/quant_architectures.py [--seeds 0 1 2] [--models resnet20 ...] [--threads 1]

Prints a table, then one JSON line.
"""
from __future__ import annotations

import os
import sys


def _early_threads() -> int:
    n = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 1
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)
    return n


THREADS = _early_threads()

import argparse  # noqa: E402
import copy  # noqa: E402
import io as _io  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from minicompress import io, nn, optim, quant  # noqa: E402
from minicompress.data import load_digits  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "models"))
from digits_training import DEFAULT_CACHE, trained  # noqa: E402
from torch_twins import mobilenet_v2_twin, resnet_twin, vit_twin  # noqa: E402

TWINS = {
    "resnet20": lambda: resnet_twin(torch, "basic", [3, 3, 3], 10, in_channels=1, small_input=True,
                                    widths=(16, 32, 64), quantizable=True),
    "mobilenet_v2_w0.5": lambda: mobilenet_v2_twin(torch, 10, 0.5, in_channels=1, small_input=True, quantizable=True),
    "vit_p2_l4_d64": lambda: vit_twin(torch, 8, 2, 4, 4, 64, 128, 10, in_channels=1),
}


def best_time(fn, budget: float) -> float:
    """Minimum wall time of fn() over repeated runs (after one warm-up), within ~budget seconds."""
    fn()
    best, spent, runs = float("inf"), 0.0, 0
    while runs < 3 or (spent < budget and runs < 500):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, runs = min(best, dt), spent + dt, runs + 1
    return best


def accuracy(model, x, y) -> float:
    with nn.no_grad():
        return float((model(x).argmax(1) == y).mean())


def torch_accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def file_bytes(model) -> int:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.npz")
        io.save(model, path)
        return os.path.getsize(path)


def torch_bytes(model) -> int:
    buf = _io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def calibrate(prepared, batches) -> None:
    with nn.no_grad():
        for xb in batches:
            prepared(xb)


def static_int8(float_model, batches):
    """fuse_model -> prepare (x86) -> calibrate -> convert; returns (fused float, int8)."""
    fused = copy.deepcopy(float_model).eval()
    fused.fuse_model()
    fused.qconfig = quant.get_default_qconfig("x86")
    prepared = quant.prepare(fused)
    calibrate(prepared, batches)
    return fused, quant.convert(prepared)


def torch_static_int8(twin, batches):
    twin = copy.deepcopy(twin).eval()
    twin.fuse_model()
    twin.qconfig = torch.ao.quantization.get_default_qconfig("x86")
    prepared = torch.ao.quantization.prepare(twin)
    with torch.no_grad():
        for xb in batches:
            prepared(torch.from_numpy(xb))
    return torch.ao.quantization.convert(prepared)


def wrap_linears(model, qconfig, keep_float=()):
    """Every nn.Linear (out_proj included) gets ``qconfig`` unless named in ``keep_float``; QuantWrapper each."""
    model = copy.deepcopy(model)
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            m.qconfig = None if name in keep_float else qconfig
    return quant.add_quant_dequant(model)


def conv_qat_int8(float_model, data, seed: int, epochs: int = 3):
    """QAT where PTQ loses more than 0.5 points: ``fuse_model(is_qat=True)`` -> ``prepare_qat`` (x86) -> AdamW
    lr 1e-4 for ``epochs`` on the digits (observers and BatchNorm statistics frozen for the last epoch) ->
    ``convert``."""
    model = copy.deepcopy(float_model).train()
    model.fuse_model(is_qat=True)
    model.qconfig = quant.get_default_qat_qconfig("x86")
    model = quant.prepare_qat(model)
    _fine_tune(model, data, seed, epochs, freeze_after=max(1, epochs - 1))
    return quant.convert(model.eval())


def _fine_tune(model, data, seed: int, epochs: int, freeze_after: int | None = None) -> None:
    x_train, y_train = data[0], data[1]
    opt = optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    ce, rng = nn.CrossEntropyLoss(), np.random.default_rng(100 + seed)
    for epoch in range(epochs):
        if freeze_after is not None and epoch >= freeze_after:
            model.apply(quant.disable_observer)
            model.apply(quant.freeze_bn_stats)
        for idx in np.array_split(rng.permutation(len(x_train)), len(x_train) // 64):
            opt.zero_grad()
            ce(model(x_train[idx]), y_train[idx])
            model.backward(ce.backward())
            opt.step()


def vit_static_int8(float_model, batches, keep_float=()):
    wrapped = wrap_linears(float_model, quant.get_default_qconfig("x86"), keep_float)
    prepared = quant.prepare(wrapped)
    calibrate(prepared, batches)
    return wrapped, quant.convert(prepared)


OUT_PROJS = tuple(f"encoder.layers.encoder_layer_{i}.self_attention.out_proj" for i in range(4))


def torch_vit_static_int8(twin, batches):
    """PyTorch's recipe: x86 qconfig on the MLP and head Linear layers, ``add_quant_dequant``, prepare, calibrate,
    convert (its MultiheadAttention reads ``out_proj.weight`` directly, so ``out_proj`` cannot be wrapped)."""
    twin = copy.deepcopy(twin).eval()
    for m in twin.modules():
        if type(m) is torch.nn.Linear:
            m.qconfig = torch.ao.quantization.get_default_qconfig("x86")
    prepared = torch.ao.quantization.prepare(torch.ao.quantization.add_quant_dequant(twin))
    with torch.no_grad():
        for xb in batches:
            prepared(torch.from_numpy(xb))
    return torch.ao.quantization.convert(prepared)


def vit_qat_int8(float_model, data, seed: int, epochs: int = 3):
    """QAT of the MLP and head Linear layers (out_proj float: PyTorch's qat.Linear.from_float rejects
    NonDynamicallyQuantizableLinear), fine-tuned with AdamW lr 1e-4 on the digits, then convert."""
    model = copy.deepcopy(float_model).train()
    qconfig = quant.get_default_qat_qconfig("x86")
    for name, m in model.named_modules():
        if type(m) is nn.Linear:
            m.qconfig = qconfig
    model = quant.prepare_qat(quant.add_quant_dequant(model))
    _fine_tune(model, data, seed, epochs)
    return quant.convert(model.eval())


def latencies(ours: dict, theirs: dict, x: np.ndarray, budget: float) -> dict:
    """{variant: {'b64': (ours ms, torch ms), 'b1': ...}} for the variants in ``ours`` (torch where given)."""
    out = {}
    for batch in (64, 1):
        xb = x[:batch]
        tb = torch.from_numpy(xb)
        for variant, model in ours.items():
            with nn.no_grad():
                mine = best_time(lambda: model(xb), budget) * 1e3
            theirs_ms = None
            if theirs.get(variant) is not None:
                with torch.no_grad():
                    theirs_ms = best_time(lambda: theirs[variant](tb), budget) * 1e3
            out.setdefault(variant, {})[f"b{batch}"] = (mine, theirs_ms)
    return out


def run_model(name: str, seed: int, data: tuple, cache: str, timing: bool, budget: float) -> list[dict]:
    x_train, _, x_test, y_test = data
    batches = [x_train[i:i + 64] for i in range(0, 512, 64)]
    f = trained(name, seed, 30, data, cache)
    twin = TWINS[name]()
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in f.state_dict().items()})
    twin.eval()
    ours, theirs = {"float32": f}, {"float32": twin}
    if name == "vit_p2_l4_d64":
        ours["int8 dynamic"] = quant.quantize_dynamic(f, {nn.Linear})
        theirs["int8 dynamic"] = torch.ao.quantization.quantize_dynamic(twin, {torch.nn.Linear})
        wrapped, ours["int8 static Linear"] = vit_static_int8(f, batches)
        ours["int8 static MLP, head"] = vit_static_int8(f, batches, keep_float=OUT_PROJS)[1]
        theirs["int8 static MLP, head"] = torch_vit_static_int8(twin, batches)
        sens = quant.layer_sensitivity(wrapped, ours["int8 static Linear"], batches[:2])
        worst = [n.rsplit(".module", 1)[0] for n in list(sens)[:2]]
        ours["int8 static, 2 lowest-SQNR float"] = vit_static_int8(f, batches, keep_float=worst)[1]
        ours["int8 QAT (MLP, head)"] = vit_qat_int8(f, data, seed)
        notes = {"int8 static, 2 lowest-SQNR float": "float: " + ", ".join(worst)}
    else:
        ours["int8 static"] = static_int8(f, batches)[1]
        theirs["int8 static"] = torch_static_int8(twin, batches)
        notes = {}
        if accuracy(f, x_test, y_test) - accuracy(ours["int8 static"], x_test, y_test) > 0.005:
            ours["int8 QAT (PTQ > 0.5 below)"] = conv_qat_int8(f, data, seed)
    float_bytes = file_bytes(f)
    rows = []
    for variant, model in ours.items():
        t = theirs.get(variant)
        b = file_bytes(model)
        rows.append({"model": name, "seed": seed, "variant": variant, "accuracy": accuracy(model, x_test, y_test),
                     "torch_accuracy": None if t is None else torch_accuracy(t, x_test, y_test),
                     "bytes": b, "size_ratio": float_bytes / b,
                     "torch_bytes": None if t is None else torch_bytes(t), "note": notes.get(variant, "")})
    if timing:
        lat = latencies(ours, theirs, x_test, budget)
        for r in rows:
            r["latency_ms"] = lat[r["variant"]]
    return rows


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(TWINS), choices=list(TWINS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=THREADS)
    p.add_argument("--budget", type=float, default=0.5, help="seconds of timed runs per latency")
    p.add_argument("--cache", default=DEFAULT_CACHE)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.backends.quantized.engine = "fbgemm"
    data = load_digits()
    rows = []
    print(f"digits test set (359), {args.threads} thread(s); accuracy %; sizes: io.save / torch.save(state_dict); "
          f"latency ms, best of runs (timed on the first seed)")
    print(f"{'model':<18}{'seed':>5} {'variant':<34}{'ours':>7}{'torch':>7}{'KB':>7}{'x':>6}{'torch KB':>9}"
          f"{'b64 ours':>10}{'b64 torch':>10}{'b1 ours':>9}{'b1 torch':>9}")
    for name in args.models:
        for i, seed in enumerate(args.seeds):
            for r in run_model(name, seed, data, args.cache, timing=i == 0, budget=args.budget):
                rows.append(r)
                lat = r.get("latency_ms", {})
                b64, b1 = lat.get("b64", (None, None)), lat.get("b1", (None, None))
                ta = None if r["torch_accuracy"] is None else 100 * r["torch_accuracy"]
                tkb = None if r["torch_bytes"] is None else r["torch_bytes"] / 1024
                print(f"{name:<18}{seed:>5} {r['variant']:<34}{100 * r['accuracy']:>7.2f}{_fmt(ta, '7.2f'):>7}"
                      f"{r['bytes'] / 1024:>7.0f}{r['size_ratio']:>6.2f}{_fmt(tkb, '9.0f'):>9}"
                      f"{_fmt(b64[0], '10.2f'):>10}{_fmt(b64[1], '10.2f'):>10}{_fmt(b1[0], '9.3f'):>9}"
                      f"{_fmt(b1[1], '9.3f'):>9}  {r['note']}", flush=True)
    print(json.dumps({"bench": "quant_architectures", "threads": args.threads, "rows": rows}))


if __name__ == "__main__":
    main()
