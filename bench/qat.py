"""Does quantization-aware training recover what post-training quantization loses, at 8 and 4 bits?

Per seed: a float CNN on the bundled digits (``models.digits_cnn`` between QuantStub and DeQuantStub,
Adam). Then, from the same float weights:

  PTQ   fuse_modules (BN folded) -> prepare -> calibrate on the train split -> convert
  QAT   fuse_modules_qat -> prepare_qat -> SGD fine-tuning with ``train.fit``; for the last epoch the
        observers are frozen (``disable_observer``) and BN switches to running statistics
        (``freeze_bn_stats``) -> eval -> convert (``QAT_CONVERT_MODULE_MAPPINGS``)

8 bits: PTQ with ``get_default_qconfig('x86')`` (histogram activations 0..127, per-channel weights);
QAT with ``get_default_qat_qconfig('x86')`` (PyTorch's default, fused observer + fake-quant) and with
version 0 (plain ``FakeQuantize``). 4 bits: weights -8..7 per-channel symmetric, activations 0..15
(PTQ: MinMax observers; QAT: the same two fake-quant kinds; LSQ: learnable per-tensor scales).

Reported per method: test accuracy of the converted int8 model, of the fake-quant model (QAT), and the
agreement of their predictions; mean +- std over seeds; the QAT / float training time per epoch ratio
(interleaved epochs, minimum of three each).
With PyTorch installed, PTQ / default QAT at 8 bits and fused QAT at 4 bits also run in PyTorch 2.13 on
the same float weights and batches (its fused fake-quant trains with FBGEMM's qparams but convert uses the
observer's: the source of the lower 4-bit agreement, reproduced here).

    /tmp/venv/bin/python bench/qat.py [--seeds 3] [--float-epochs 10] [--qat-epochs 3] [--no-torch]

Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np

from minicompress import manual_seed, models, nn
from minicompress.data import DataLoader, load_digits
from minicompress.optim import SGD, Adam
from minicompress.quant import (DeQuantStub, MinMaxObserver, PerChannelMinMaxObserver, QConfig, QuantStub,
                                convert, fuse_modules, get_default_qconfig, prepare)
from minicompress.quant import fake_quantize as fq
from minicompress.quant.flows import DEFAULT_STATIC_QUANT_MODULE_MAPPINGS
from minicompress.quant.learnable import LearnableFakeQuantize
from minicompress.quant.observer import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver
from minicompress.quant.qat import (QAT_CONVERT_MODULE_MAPPINGS, freeze_bn_stats, fuse_modules_qat,
                                    get_default_qat_qconfig, prepare_qat)
from minicompress.train import evaluate, fit, predict

GROUPS = [["1", "2", "3"], ["4", "5", "6"], ["9", "10"]]   # conv-bn-relu x 2, linear-relu (after QuantStub)
CONVERT_MAPPING = {**DEFAULT_STATIC_QUANT_MODULE_MAPPINGS, **QAT_CONVERT_MODULE_MAPPINGS}
ACT4 = dict(quant_min=0, quant_max=15, dtype="quint8")
WT4 = dict(quant_min=-8, quant_max=7, dtype="qint8", qscheme="per_channel_symmetric")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--float-epochs", type=int, default=10)
    p.add_argument("--qat-epochs", type=int, default=4, help="the last one with frozen observers and BN")
    p.add_argument("--qat-lr", type=float, default=0.005)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference run")
    return p.parse_args()


def qconfigs() -> dict:
    """name -> (bits, kind, qconfig); kind is 'ptq' or 'qat'."""
    fused = fq.FusedMovingAvgObsFakeQuantize
    return {
        "PTQ x86 default": (8, "ptq", get_default_qconfig("x86")),
        "QAT x86 default (fused)": (8, "qat", get_default_qat_qconfig("x86")),
        "QAT FakeQuantize (v0)": (8, "qat", get_default_qat_qconfig("x86", version=0)),
        "PTQ MinMax": (4, "ptq", QConfig(MinMaxObserver.with_args(**ACT4), PerChannelMinMaxObserver.with_args(**WT4))),
        "QAT fused": (4, "qat", QConfig(fused.with_args(observer=MovingAverageMinMaxObserver, **ACT4),
                                        fused.with_args(observer=MovingAveragePerChannelMinMaxObserver, **WT4))),
        "QAT FakeQuantize": (4, "qat", QConfig(
            fq.FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, **ACT4),
            fq.FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, **WT4))),
        "QAT LSQ (learned scales)": (4, "qat", QConfig(
            LearnableFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, use_grad_scaling=True, **ACT4),
            LearnableFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, use_grad_scaling=True,
                                            quant_min=-8, quant_max=7, dtype="qint8",
                                            qscheme="per_tensor_symmetric"))),
    }


def float_model(seed: int, data: tuple, args: argparse.Namespace) -> nn.Module:
    xtr, ytr, _, _ = data
    manual_seed(seed)
    model = nn.Sequential(QuantStub(), *models.digits_cnn(rng=np.random.default_rng(seed)), DeQuantStub())
    fit(model, nn.CrossEntropyLoss(), Adam(model.parameters(), lr=1e-3),
        DataLoader(xtr, ytr, args.batch_size, shuffle=True, rng=np.random.default_rng(seed + 1)),
        epochs=args.float_epochs, quiet=True)
    return model


def epoch_time_ratio(model: nn.Module, data: tuple, args: argparse.Namespace, rounds: int = 3) -> float:
    """min time of one QAT epoch (x86 default qconfig) / min time of one float epoch, interleaved."""
    xtr, ytr, _, _ = data
    float_copy = copy.deepcopy(model).train()
    q = fuse_modules_qat(copy.deepcopy(model).train(), GROUPS)
    q.qconfig = get_default_qat_qconfig("x86")
    q = prepare_qat(q)
    times: dict = {"float": [], "qat": []}
    for _ in range(rounds):
        for name, m in (("float", float_copy), ("qat", q)):
            start = time.perf_counter()
            fit(m, nn.CrossEntropyLoss(), SGD(m.parameters(), lr=1e-3),
                DataLoader(xtr, ytr, args.batch_size, shuffle=True, rng=np.random.default_rng(0)), quiet=True)
            times[name].append(time.perf_counter() - start)
    return min(times["qat"]) / min(times["float"])


def run_ptq(model: nn.Module, qconfig: QConfig, data: tuple) -> dict:
    xtr, _, xte, yte = data
    prepared = fuse_modules(copy.deepcopy(model).eval(), GROUPS)
    prepared.qconfig = qconfig
    prepared = prepare(prepared)
    predict(prepared, xtr)                                       # calibration
    return {"int8": evaluate(convert(prepared), xte, yte)["accuracy"]}


def run_qat(model: nn.Module, qconfig: QConfig, data: tuple, seed: int, args: argparse.Namespace) -> dict:
    xtr, ytr, xte, yte = data
    q = fuse_modules_qat(copy.deepcopy(model).train(), GROUPS)
    q.qconfig = qconfig
    q = prepare_qat(q)
    opt = SGD(q.parameters(), lr=args.qat_lr, momentum=0.9)
    lsq = [m for m in q.modules() if isinstance(m, LearnableFakeQuantize)]
    for epoch in range(args.qat_epochs):
        if epoch == 1:
            for m in lsq:
                m.enable_param_learning()                        # epoch 0 initialises them from observers
        if epoch == args.qat_epochs - 1:
            q.apply(fq.disable_observer)
            q.apply(freeze_bn_stats)
        fit(q, nn.CrossEntropyLoss(), opt, DataLoader(xtr, ytr, args.batch_size, shuffle=True,
                                                      rng=np.random.default_rng(seed * 100 + epoch)),
            epochs=1, quiet=True)
    q.eval()
    fake = predict(q, xte).argmax(axis=1)
    int8 = predict(convert(q, CONVERT_MAPPING), xte).argmax(axis=1)
    return {"int8": float(np.mean(int8 == yte)), "fake_quant": float(np.mean(fake == yte)),
            "agreement": float(np.mean(int8 == fake))}


def torch_reference(model: nn.Module, data: tuple, seed: int, args: argparse.Namespace) -> dict:
    """8-bit PTQ, default QAT and 4-bit fused QAT in PyTorch: same float weights and batch order."""
    import warnings

    import torch
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.backends.quantized.engine = "fbgemm"
    tq = torch.ao.quantization
    xtr, ytr, xte, yte = data
    c1, c2 = model[1].out_channels, model[4].out_channels
    tm = torch.nn.Sequential(
        tq.QuantStub(), torch.nn.Conv2d(1, c1, 3, padding=1), torch.nn.BatchNorm2d(c1), torch.nn.ReLU(),
        torch.nn.Conv2d(c1, c2, 3, padding=1), torch.nn.BatchNorm2d(c2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(model[9].in_features, model[9].out_features), torch.nn.ReLU(),
        torch.nn.Linear(model[11].in_features, model[11].out_features), tq.DeQuantStub())
    tm.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    acc = lambda m, x: float((m(torch.tensor(x)).argmax(1).numpy() == yte).mean())
    ptq = tq.fuse_modules(copy.deepcopy(tm).eval(), GROUPS)
    ptq.qconfig = tq.get_default_qconfig("x86")
    ptq = tq.prepare(ptq)
    with torch.no_grad():
        for i in range(0, len(xtr), 256):
            ptq(torch.tensor(xtr[i:i + 256]))
        out = {"PTQ x86 default": {"bits": 8, "int8": acc(tq.convert(ptq), xte)}}
    fused = tq.FusedMovingAvgObsFakeQuantize
    qat_configs = {
        "QAT x86 default (fused)": (8, tq.get_default_qat_qconfig("x86")),
        "QAT fused": (4, tq.QConfig(
            activation=fused.with_args(observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=15,
                                       dtype=torch.quint8),
            weight=fused.with_args(observer=tq.MovingAveragePerChannelMinMaxObserver, quant_min=-8, quant_max=7,
                                   dtype=torch.qint8, qscheme=torch.per_channel_symmetric)))}
    for name, (bits, qconfig) in qat_configs.items():
        q = tq.fuse_modules_qat(copy.deepcopy(tm).train(), GROUPS)
        q.qconfig = qconfig
        q = tq.prepare_qat(q)
        opt = torch.optim.SGD(q.parameters(), lr=args.qat_lr, momentum=0.9)
        for epoch in range(args.qat_epochs):
            if epoch == args.qat_epochs - 1:
                q.apply(tq.disable_observer)
                q.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
            for xb, yb in DataLoader(xtr, ytr, args.batch_size, shuffle=True,
                                     rng=np.random.default_rng(seed * 100 + epoch)):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(q(torch.tensor(xb)), torch.tensor(yb)).backward()
                opt.step()
        q.eval()
        with torch.no_grad():
            fake = q(torch.tensor(xte)).argmax(1).numpy()
            int8 = tq.convert(copy.deepcopy(q))(torch.tensor(xte)).argmax(1).numpy()
        out[name] = {"bits": bits, "int8": float(np.mean(int8 == yte)), "fake_quant": float(np.mean(fake == yte)),
                     "agreement": float(np.mean(int8 == fake))}
    return out


def mean_std(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{100 * np.mean(values):5.1f} +- {100 * np.std(values):3.1f}"


def main() -> None:
    args = parse_args()
    data = load_digits()
    configs = qconfigs()
    results: dict = {name: [] for name in ["float"] + list(configs)}
    torch_results: dict = {}
    use_torch = not args.no_torch
    for seed in range(args.seeds):
        model = float_model(seed, data, args)
        results["float"].append({"int8": evaluate(model, data[2], data[3])["accuracy"]})
        for name, (bits, kind, qconfig) in configs.items():
            r = run_ptq(model, qconfig, data) if kind == "ptq" else run_qat(model, qconfig, data, seed, args)
            results[name].append(r)
        if use_torch:
            try:
                for name, r in torch_reference(model, data, seed, args).items():
                    torch_results.setdefault(name, []).append(r)
            except ImportError:
                use_torch = False
    print(f"digits, {args.seeds} seeds: float {args.float_epochs} epochs (Adam), QAT {args.qat_epochs} epochs "
          f"(SGD lr {args.qat_lr}, last epoch with frozen observers + BN); test accuracy %, mean +- std\n")
    rows = [(configs[name][0], name, results[name]) for name in configs]
    rows += [(rs[0]["bits"], f"PyTorch 2.13: {name}", rs) for name, rs in torch_results.items()]
    w = max(len(name) for _, name, _ in rows)
    print(f"{'bits':>4}  {'method':<{w}} {'int8 (converted)':>17} {'fake-quant model':>17} {'agreement':>15}")
    print(f"{'32':>4}  {'float':<{w}} {mean_std([r['int8'] for r in results['float']]):>17}")
    for bits, name, rs in sorted(rows, key=lambda r: -r[0]):
        print(f"{bits:>4}  {name:<{w}} {mean_std([r['int8'] for r in rs]):>17} "
              f"{mean_std([r.get('fake_quant') for r in rs]):>17} {mean_std([r.get('agreement') for r in rs]):>15}")
    ratio = epoch_time_ratio(model, data, args)
    print(f"\nQAT / float training time per epoch (x86 default qconfig, interleaved, min of 3): {ratio:.2f}x")
    summary = {name: {k: float(np.mean([r[k] for r in rs if k in r])) for k in ("int8", "fake_quant", "agreement")
                      if any(k in r for r in rs)} for name, rs in {**results, **{f"torch {n}": v for n, v in
                                                                            torch_results.items()}}.items()}
    print(json.dumps({"bench": "qat", "seeds": args.seeds, "float_epochs": args.float_epochs,
                      "qat_epochs": args.qat_epochs, "qat_over_float_epoch_time": ratio, "results": summary}))


if __name__ == "__main__":
    main()
