"""The main job: teacher -> distilled student -> pruned student -> int8 student, every stage measured.

``run(recipe, out_dir)`` follows a recipe (``minicompress.recipe``): it trains a teacher (a CNN, MLP,
ResNet, MobileNetV2 or ViT: ``models.build``) on labels, distills a smaller student from it (``distill.Distiller``, ``KDLoss``), removes channels
(``prune.channel_prune``) then prunes weights gradually while fine-tuning with distillation
(``prune.GradualPruning``), and quantizes to int8 (static PTQ: fuse, prepare, calibrate, convert;
or QAT). Each stage's model is saved to ``out_dir`` and measured on the test split.
"""
from __future__ import annotations

import copy
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import io, metrics, models, nn, optim
from .data import DataLoader, load_digits
from .data.checks import check_class_labels, check_images, check_labels
from .nn.random import manual_seed
from .recipe import validate_recipe
from .run_dir import output_directory
from .train import fit, predict

STAGE_KEYS = ("stage", "accuracy", "macro_f1", "params", "nonzeros", "bytes_on_disk", "macs",
              "latency_ms_per_sample")


def load_data(source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The bundled digits (``"digits"``) or an ``.npz`` with x_train, y_train, x_test, y_test (N, C, H, W).

    Every array is checked (``data.checks``): real, finite images in (N, C, H, W) with even H and W,
    integer labels; the training labels must be exactly the classes 0 .. K-1, the test labels in it.
    """
    if source == "digits":
        return load_digits()
    path = Path(source)
    if path.is_dir():
        raise ValueError(f"data set {source} is a directory; expected an .npz file (or 'digits')")
    if not path.is_file():
        raise FileNotFoundError(f"data set not found: {source} (use 'digits' or an .npz file)")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{source}: not an .npz archive (a zip of .npy arrays: x_train, y_train, x_test, "
                         f"y_test, as numpy.savez writes)")
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f.files]
        if missing:
            raise ValueError(f"{source}: missing arrays {missing} (need x_train, y_train, x_test, y_test)")
        try:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        except ValueError as exc:                   # object arrays refused by allow_pickle=False
            raise ValueError(f"{source}: holds an array that is not plain numbers ({exc})") from None
    x_train = check_images(arrays["x_train"], f"{source}: x_train")
    x_test = check_images(arrays["x_test"], f"{source}: x_test")
    y_train, classes = check_class_labels(arrays["y_train"], f"{source}: y_train")
    y_test = check_labels(arrays["y_test"], f"{source}: y_test", classes)
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise ValueError(f"{source}: x_{name} has {len(x)} samples, y_{name} {len(y)}")
    if x_test.shape[1:] != x_train.shape[1:]:
        raise ValueError(f"{source}: x_test images {x_test.shape[1:]} differ from x_train's {x_train.shape[1:]}")
    if x_train.shape[2] % 2 or x_train.shape[3] % 2:
        raise ValueError(f"{source}: image height and width must be even (the CNN max-pools by 2), got {x_train.shape}")
    return x_train, y_train, x_test, y_test


# ---------------------------------------------------------------------------- measuring
def measure(stage: str, model: nn.Module, path: Path, x_test: np.ndarray, y_test: np.ndarray,
            latency_batch: int = 64) -> dict:
    """The report row of one stage (model already saved at ``path``)."""
    pred = predict(model, x_test).argmax(axis=1)
    batch = x_test[:latency_batch]
    seconds = metrics.measure_latency(model, batch, repeats=15, warmup=3)
    return {
        "stage": stage,
        "accuracy": metrics.accuracy(y_test, pred),
        "macro_f1": metrics.macro_f1(y_test, pred),
        "params": metrics.count_params(model),
        "nonzeros": metrics.count_params(model, nonzero=True),
        "bytes_on_disk": os.path.getsize(path),
        "macs": metrics.count_macs(model, x_test.shape[1:]),
        "latency_ms_per_sample": 1000.0 * seconds / len(batch),
        "file": path.name,
    }


def _add_ratios(stages: list[dict]) -> None:
    teacher = stages[0]
    for row in stages:
        row["speedup_vs_teacher"] = teacher["latency_ms_per_sample"] / row["latency_ms_per_sample"]
        row["compression_vs_teacher"] = teacher["bytes_on_disk"] / row["bytes_on_disk"]


# ---------------------------------------------------------------------------- stages
def _adam(lr: float, epochs: int) -> tuple[Callable, Callable]:
    return (lambda params: optim.Adam(params, lr=lr),
            lambda opt: optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1)))


def build_model(cfg: dict, stage: str, data: tuple, rng: np.random.Generator) -> nn.Module:
    """The ``cfg["arch"]`` model of a teacher / student table (``models.build`` with the table's options)."""
    num_classes = int(max(data[1].max(), data[3].max()) + 1)
    try:
        return models.build(cfg["arch"], num_classes, data[0].shape[1:], channels=tuple(cfg["channels"]),
                            hidden=cfg["hidden"], depth=cfg["resnet"]["depth"],
                            width_mult=cfg["mobilenet_v2"]["width_mult"], rng=rng, **cfg["vit"])
    except ValueError as exc:
        raise ValueError(f"{stage}.arch = {cfg['arch']!r}: {exc}") from None


def train_teacher(cfg: dict, data: tuple, batch_size: int, rng: np.random.Generator, quiet: bool) -> nn.Module:
    x_train, y_train = data[0], data[1]
    model = build_model(cfg, "teacher", data, rng)
    make_opt, make_sched = _adam(cfg["lr"], cfg["epochs"])
    opt = make_opt(model.parameters())
    fit(model, nn.CrossEntropyLoss(), opt, DataLoader(x_train, y_train, batch_size, shuffle=True, rng=rng),
        epochs=cfg["epochs"], scheduler=make_sched(opt), quiet=quiet, desc="teacher")
    return model


def distill_student(student: nn.Module, teacher: nn.Module, cfg: dict, epochs: int, lr: float, data: tuple,
                    batch_size: int, rng: np.random.Generator, quiet: bool, callbacks: tuple = (),
                    desc: str | None = None) -> nn.Module:
    from .distill import Distiller, KDLoss

    make_opt, make_sched = _adam(lr, epochs)
    Distiller(loss=KDLoss(T=cfg["temperature"], alpha=cfg["alpha"]), optimizer=make_opt, scheduler=make_sched,
              epochs=epochs, batch_size=batch_size, callbacks=callbacks, quiet=quiet, desc=desc,
              rng=rng).fit(student, data[0], data[1], teacher=teacher)
    return student


def prune_student(student: nn.Module, teacher: nn.Module, recipe: dict, data: tuple, batch_size: int,
                  rng: np.random.Generator, quiet: bool) -> nn.Module:
    """Channel surgery, then gradual magnitude pruning (Zhu & Gupta) during a distilled fine-tune."""
    from . import prune

    cfg = recipe["prune"]
    model = student
    if cfg["heads"] > 0 and any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        model = prune.prune_heads(model, cfg["heads"], cfg["importance"] if cfg["importance"] != "bn_scale" else "l1")
    if cfg["channel_amount"] > 0:
        model = prune.channel_prune(model, data[0][:batch_size], cfg["channel_amount"], importance=cfg["importance"],
                                    global_pruning=cfg["global_pruning"],
                                    round_to=cfg["round_to"] if cfg["round_to"] > 1 else None)
    callbacks: tuple = ()
    if cfg["sparsity"] > 0 and cfg["epochs"] == 0:        # no fine-tune: one-shot magnitude pruning
        prune.prune_to_sparsity(prune.prunable_weights(model), cfg["sparsity"])
    elif cfg["sparsity"] > 0:
        steps = len(DataLoader(data[0], data[1], batch_size)) * cfg["epochs"]
        n_steps = 10
        frequency = max(1, int(0.6 * steps) // n_steps)       # reach the target after 60 % of the fine-tune
        callbacks = (prune.GradualPruning(cfg["sparsity"], frequency=frequency, n_steps=n_steps,
                                          targets=prune.prunable_weights(model)),)
    if cfg["epochs"] > 0:
        distill_student(model, teacher, recipe["student"], cfg["epochs"], cfg["lr"], data, batch_size, rng,
                        quiet, callbacks, desc="pruned")
    return model


def _fusion_groups(model: nn.Sequential) -> list[list[str]]:
    """Names of Conv-BN(-ReLU), Conv-ReLU, Linear-BN and Linear-ReLU runs in a flat Sequential (the fusions
    ``fuse_modules`` knows: as in PyTorch there is no Linear-BN-ReLU, so that run fuses as Linear-BN)."""
    names, mods = zip(*model.named_children())
    groups, i = [], 0
    while i < len(mods):
        run = [i]
        if isinstance(mods[i], (nn.Conv2d, nn.Linear)):
            j = i + 1
            if j < len(mods) and isinstance(mods[j], (nn.BatchNorm2d, nn.BatchNorm1d)):
                run.append(j)
                j += 1
            if j < len(mods) and isinstance(mods[j], nn.ReLU) and not (len(run) == 2 and isinstance(mods[i], nn.Linear)):
                run.append(j)
        if len(run) > 1:
            groups.append([names[k] for k in run])
        i = run[-1] + 1
    return groups


def quantize_student(model: nn.Module, teacher: nn.Module, recipe: dict, data: tuple, batch_size: int,
                     rng: np.random.Generator, quiet: bool) -> nn.Module:
    """int8: ``dynamic`` (Linear weights), or static: QuantStub + model + DeQuantStub (the reference models have
    their own) and fusion (their ``fuse_model``), then observe (PTQ calibration or QAT) and convert."""
    from . import prune, quant
    from .quant import qat

    cfg = recipe["quant"]
    float_model = copy.deepcopy(model)
    masks = {id(m): m.weight_mask.copy() for m in float_model.modules() if prune.pruning_hook(m, "weight")}
    prune.bake_pruning(float_model)
    if cfg["mode"] == "dynamic":
        return quant.quantize_dynamic(float_model.eval(), {nn.Linear})
    is_qat = cfg["mode"] == "qat"
    reference = hasattr(float_model, "fuse_model")      # the reference models: their own stubs and fusion
    wrapped = float_model if reference else nn.Sequential(quant.QuantStub(), *float_model.children(),
                                                          quant.DeQuantStub())
    wrapped.train(is_qat)
    masks = {name: masks[id(m)] for name, m in wrapped.named_modules() if id(m) in masks}
    if reference:
        wrapped.fuse_model(is_qat=is_qat)
    else:
        wrapped = (qat.fuse_modules_qat if is_qat else quant.fuse_modules)(wrapped, _fusion_groups(wrapped))
    if not is_qat:
        wrapped.qconfig = quant.get_default_qconfig(cfg["backend"])
        wrapped = quant.prepare(wrapped)
        with nn.no_grad():
            for b, (xb, _) in enumerate(DataLoader(data[0], data[1], batch_size, shuffle=True, rng=rng)):
                if b >= cfg["calibration_batches"]:
                    break
                wrapped(xb)
    else:
        wrapped.qconfig = qat.get_default_qat_qconfig(cfg["backend"])
        wrapped = qat.prepare_qat(wrapped)
        for name, mask in masks.items():      # the QAT layer sits where its float layer was (fused or not)
            prune.custom_from_mask(wrapped.get_submodule(name), "weight", mask)   # fq(weight_orig * mask)
        distill_student(wrapped, teacher, recipe["student"], cfg["qat_epochs"], cfg["qat_lr"], data,
                        batch_size, rng, quiet, desc="int8 QAT")
        prune.bake_pruning(wrapped)
    wrapped.eval()
    return quant.convert(wrapped)


# ---------------------------------------------------------------------------- the run
ONNX_FILE = "final.onnx"


def run(recipe: dict, out_dir: str | os.PathLike, quiet: bool = False,
        log: Callable[[str], Any] = print, model: str | None = None, arch: str | None = None,
        export_onnx: str | None = None) -> dict:
    """Run every enabled stage of ``recipe``; write models, ``report.json`` and ``report.md`` to ``out_dir``.

    ``model``: the user's own model file is the teacher (evaluated, not trained; ``user_model``), with
    ``arch`` naming the architecture of a state dict. ``export_onnx`` ('qdq' or 'qoperator', the int8 layout):
    the final stage is also written as ``final.onnx`` (``io.export_onnx``); a model the exporter refuses
    leaves ``report['onnx'] = None`` and the exporter's message in ``report['onnx_error']``, the rest of the
    run kept.

    The recipe and the data are checked before any training. ``out_dir`` is written as one
    transaction (``run_dir.output_directory``): a failed or killed run leaves the previous run there
    untouched, a concurrent run into the same directory is refused, and the directory holds exactly
    the files ``report.json`` lists. ``log`` gets one line as each stage starts and ends.
    """
    recipe = validate_recipe(recipe)
    start = time.perf_counter()
    data = load_data(recipe["data"]["source"])
    given = None
    if model is not None:
        from .user_model import load_user_model
        given = load_user_model(model, arch, recipe["teacher"], data)
    if export_onnx is not None and export_onnx not in ("qdq", "qoperator"):
        raise ValueError(f"export_onnx must be 'qdq' or 'qoperator', got {export_onnx!r}")
    with output_directory(out_dir, planned_files(recipe) | ({ONNX_FILE} if export_onnx else set())) as work:
        stamp = lambda line: log(f"[{time.perf_counter() - start:6.1f} s] {line}")  # noqa: E731
        report, final = _run_stages(recipe, data, work, quiet, stamp, given)
        if export_onnx is not None:
            _export_final(report, final, work, data[2][:2], export_onnx, stamp)
        report["seconds"] = time.perf_counter() - start
        write_report(report, work)
    return report



def _export_final(report: dict, final: nn.Module, out: Path, example: np.ndarray, int8_format: str,
                  log: Callable[[str], Any]) -> None:
    """The last stage's model ``final`` as ONNX (``run``'s ``export_onnx``); the outcome goes into ``report``."""
    report["onnx"], report["onnx_error"] = None, None
    try:
        io.export_onnx(final, out / ONNX_FILE, example, int8_format=int8_format)
    except (TypeError, ValueError, ImportError) as error:
        report["onnx_error"] = str(error)
        log(f"onnx     NOT written: {error}")
        return
    report["onnx"] = ONNX_FILE
    log(f"onnx     {ONNX_FILE} ({int8_format} for int8)")


def planned_files(recipe: dict) -> set[str]:
    """The names a run of ``recipe`` writes into its directory."""
    stages = ["teacher"] + [s for s in ("student", "pruned", "int8")
                            if recipe[{"student": "student", "pruned": "prune", "int8": "quant"}[s]]["enabled"]]
    return {f"{i}_{s}.npz" for i, s in enumerate(stages)} | {"report.json", "report.md", "accuracy_vs_size.png"}


def _run_stages(recipe: dict, data: tuple, out: Path, quiet: bool, log: Callable[[str], Any],
                given: nn.Module | None = None) -> tuple[dict, nn.Module]:
    """Every enabled stage, each recorded into ``out``: ``(report, the last stage's model)``."""
    rng = manual_seed(recipe["seed"])
    x_test, y_test = data[2], data[3]
    batch_size = recipe["data"]["batch_size"]
    stages: list[dict] = []

    def record(stage: str, model: nn.Module) -> None:
        path = out / f"{len(stages)}_{stage}.npz"
        io.save(model, path, metadata={"stage": stage, "recipe": recipe})
        row = measure(stage, model, path, x_test, y_test)
        stages.append(row)
        log(f"{stage:<8} done: accuracy {row['accuracy']:.4f}  {row['params']:,} params  "
            f"{row['bytes_on_disk']:,} bytes")

    if given is None:
        log(f"teacher  training {recipe['teacher']['epochs']} epochs")
        teacher = train_teacher(recipe["teacher"], data, batch_size, rng, quiet)
    else:
        log("teacher  the given model (evaluated, not trained)")
        teacher = given
    teacher.eval()
    record("teacher", teacher)
    current = teacher
    s = recipe["student"]
    if s["enabled"]:
        log(f"student  distilling {s['epochs']} epochs")
        student = build_model(s, "student", data, rng)
        current = distill_student(student, teacher, s, s["epochs"], s["lr"], data, batch_size, rng, quiet, desc="student")
        record("student", current)
    if recipe["prune"]["enabled"]:
        log(f"pruned   channel surgery + {recipe['prune']['epochs']} epochs of gradual pruning")
        current = prune_student(current, teacher, recipe, data, batch_size, rng, quiet)
        record("pruned", current)
    if recipe["quant"]["enabled"]:
        log(f"int8     {recipe['quant']['mode']}")
        current = quantize_student(current, teacher, recipe, data, batch_size, rng, quiet)
        record("int8", current)
    _add_ratios(stages)
    return {"stages": stages, "recipe": recipe}, current


def write_report(report: dict, out: Path) -> None:
    """``report.json`` (every figure), ``report.md`` (the table) and, with matplotlib, ``accuracy_vs_size.png``."""
    report["plot"] = plot_accuracy_vs_size(report["stages"], out / "accuracy_vs_size.png")
    report["files"] = [row["file"] for row in report["stages"]] + ["report.json", "report.md"] + (
        [report["plot"]] if report["plot"] else []) + ([report["onnx"]] if report.get("onnx") else [])
    with io.atomic_write(out / "report.json") as f:
        f.write(json.dumps(report, indent=2).encode())
    markdown = (f"# minicompress run\n\n{format_table(report['stages'])}\n\nTotal time {report['seconds']:.1f} s. "
                f"Recipe:\n\n```json\n{json.dumps(report['recipe'], indent=2)}\n```\n")
    with io.atomic_write(out / "report.md") as f:
        f.write(markdown.encode())


def format_table(stages: list[dict]) -> str:
    head = ("| stage | accuracy | macro-F1 | params | nonzeros | bytes on disk | MACs | latency ms/sample "
            "| speed-up | compression |\n|---|---|---|---|---|---|---|---|---|---|\n")
    rows = [f"| {r['stage']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['params']:,} | {r['nonzeros']:,} "
            f"| {r['bytes_on_disk']:,} | {r['macs']:,} | {r['latency_ms_per_sample']:.4f} "
            f"| {r['speedup_vs_teacher']:.2f}x | {r['compression_vs_teacher']:.1f}x |" for r in stages]
    return head + "\n".join(rows)


def plot_accuracy_vs_size(stages: list[dict], path: Path) -> str | None:
    """Accuracy against bytes on disk (log scale), one point per stage; None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, ax = plt.subplots(figsize=(6, 3.8))
    sizes = [r["bytes_on_disk"] / 1024 for r in stages]
    accs = [100 * r["accuracy"] for r in stages]
    ax.plot(sizes, accs, "o-")
    for i, (r, x, y) in enumerate(zip(stages, sizes, accs)):      # labels alternate above / below the line
        ax.annotate(r["stage"], (x, y), textcoords="offset points", xytext=(0, 8 if i % 2 == 0 else -14),
                    ha="center")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(min(sizes) / 1.6, max(sizes) * 1.6)
    ax.set_ylim(min(accs) - 2, min(100.5, max(accs) + 2))
    ax.set_xlabel("size on disk (KiB, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy vs size, per stage")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path.name
