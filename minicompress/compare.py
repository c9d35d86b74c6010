"""``minicompress compare MODEL.onnx``: run an (int8) ONNX model in minicompress and in onnxruntime, value by value.

Every activation of the ONNX graph is made an output of the onnxruntime session, and every module output of
``load_onnx``'s GraphModule is caught by a forward hook; both carry the ONNX value names. One row per node
output: max |ours - theirs|, the share of differing elements (of codes, for integer outputs) and, where they
differ, why:

    'input X differs'           a data input of the node already differs (the difference is carried)
    QuantizeLinear rows         which rounding rules of ``quant.rounding`` (R1-R5) give onnxruntime's codes
                                from onnxruntime's own input (``rules``), how many of its x / s are exact ties
                                k + 1/2 (``ties``), and the largest input difference in codes, max |dx| / s
                                (``input_shift_codes``: a code can move by at most its ceiling)
    'float arithmetic'          a float output that differs on equal inputs (summation order)
    'differs on equal inputs'   an integer output that differs although every input agrees (a real mismatch)

``optimized`` (default): ``load_onnx(fuse_qdq=True)`` against a session with onnxruntime's default graph
optimisations (only the values that survive the fusion are compared); else the file as written against
``ORT_DISABLE_ALL``. Needs onnx and onnxruntime (``pip install 'minicompress[compare]'``); onnxruntime is the
oracle here, imported only by ``run_onnxruntime``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .nn.grad_mode import no_grad
from .quant.reference import quantize_code
from .quant.rounding import RULE_NAMES


def model_inputs(graph: Any, npz: str | None, seed: int) -> dict[str, np.ndarray]:
    """The feeds: the arrays of ``npz`` (keys = the ONNX input names), or random normal data of the inputs'
    shapes (a dynamic batch axis: 2 samples) drawn with ``seed``."""
    names = [i.name for i in graph.inputs]
    if npz is not None:
        with np.load(npz, allow_pickle=False) as f:
            feeds = {k: f[k] for k in f.files}
        if sorted(feeds) != sorted(names):
            raise ValueError(f"compare: {npz} holds the arrays {sorted(feeds)}; the model's inputs are {names}")
        for i in graph.inputs:
            if feeds[i.name].dtype != np.dtype(i.dtype):
                raise ValueError(f"compare: {npz}[{i.name!r}] has dtype {feeds[i.name].dtype}, the model takes {i.dtype}")
        return feeds
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in graph.inputs:
        shape = tuple(d if isinstance(d, int) and d > 0 else 2 for d in i.shape)
        if np.dtype(i.dtype).kind != "f":
            raise ValueError(f"compare: input {i.name!r} is {i.dtype}; give its values with --inputs FILE.npz")
        feeds[i.name] = rng.standard_normal(shape).astype(i.dtype)
    return feeds


def run_ours(model: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every value of the GraphModule by name (graph inputs and each node's outputs), caught by forward hooks."""
    values = dict(feeds)
    outputs = {name: outs for name, _, outs in model.nodes}
    handles = []
    for name, module in model.named_children():
        def catch(mod: Any, inputs: tuple, out: Any, outs: tuple = outputs[name]) -> None:
            values.update(zip(outs, out if isinstance(out, tuple) else (out,)))
        handles.append(module.register_forward_hook(catch))
    try:
        with no_grad():
            model(*(feeds[v] for v in model.inputs))
    finally:
        for h in handles:
            h.remove()
    return values


def run_onnxruntime(path: str, names: list[str], dtypes: dict[str, np.dtype], feeds: dict[str, np.ndarray],
                    optimized: bool) -> dict[str, np.ndarray]:
    """onnxruntime's CPU session on ``path`` with every value in ``names`` made a graph output (one thread)."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import helper
    except ImportError:
        raise ImportError("compare needs onnx and onnxruntime: pip install 'minicompress[compare]'") from None
    model = onnx.load(path)
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(dtypes[name]), None))
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.log_severity_level = 3
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, feeds)))


def _quantize_explanation(node: Any, b: Any, theirs_in: np.ndarray, ours_in: np.ndarray,
                          theirs: np.ndarray) -> dict:
    """Which rules give onnxruntime's codes from its own input; ties; the input difference in codes."""
    s = np.asarray(b.static(node, 1, "scale"), np.float32)
    zp = b.static(node, 2, "zero point")
    z = np.zeros((), np.int64) if zp is None else np.asarray(zp, np.int64)
    if s.size > 1:
        shape = [1] * theirs_in.ndim
        shape[int(node.attr("axis", 1)) % theirs_in.ndim] = s.size
        s, z = s.reshape(shape), z.reshape(shape)
    info = np.iinfo(theirs.dtype)
    x = np.asarray(theirs_in, np.float32)
    inv = (np.float32(1) / s).astype(np.float32)
    rules = [label for rule, label in RULE_NAMES.items()
             if np.array_equal(np.clip(quantize_code(x, s, inv, z, rule), info.min, info.max), theirs.astype(np.float64))]
    ratio = x.astype(np.float64) / s.astype(np.float64)
    ties = int(np.sum(ratio - np.floor(ratio) == 0.5))
    shift = float(np.max(np.abs(x.astype(np.float64) - np.asarray(ours_in, np.float64)) / s)) if x.size else 0.0
    return {"rules": rules, "ties": ties, "input_shift_codes": shift,
            "explanation": f"rules giving onnxruntime's codes from its input: {', '.join(rules) or 'none'}; "
                           f"{ties} ties; input differs by <= {shift:.3g} codes"}


def compare_onnx(path: str, inputs: str | None = None, *, optimized: bool = True, seed: int = 0) -> dict:
    """The per-node comparison (module docstring) as ``{"model", "mode", "rows": [...], "agree": bool}``."""
    from .io.onnx.load import build_onnx
    from .io.onnx.qdq_fusion import S8_TO_U8
    model, b = build_onnx(path, fuse_qdq=optimized, seed=seed)
    feeds = model_inputs(b.graph, inputs, seed)
    ours = run_ours(model, feeds)
    folded = {b.renamed[a] for a in b.renamed if a != b.renamed[a] and
              any(n.op_type == "Add" and a in n.outputs for n in b.graph.nodes)}   # a MatMul given the next Add's bias
    rows, producer = [], {}
    for node in b.graph.nodes:
        for o in node.outputs:
            if o.endswith(S8_TO_U8):
                continue              # an int8 pair made uint8: not a value of the file, and exposing it would undo that
            key = b.renamed.get(o, o)
            if o and b.values.get(o) is not None and b.values[o].kind == "data" and key in ours and key not in folded:
                rows.append({"op": node.op_type, "node": node.name, "output": o})
                producer[o] = node
    names = [r["output"] for r in rows]
    theirs = run_onnxruntime(path, names, {o: np.asarray(ours[b.renamed.get(o, o)]).dtype for o in names}, feeds,
                             optimized)
    differs: set[str] = set()
    for row in rows:
        o, node = row["output"], producer[row["output"]]
        a, t = np.asarray(ours[b.renamed.get(o, o)]), np.asarray(theirs[o])
        row["dtype"] = str(a.dtype)
        if a.shape != t.shape:
            row.update(max_abs_diff=None, share_differing=1.0, explanation=f"shapes differ: {a.shape} vs {t.shape}")
            differs.add(o)
            continue
        diff = np.abs(a.astype(np.float64) - t.astype(np.float64))
        wrong = (a != t) & ~(np.isnan(a.astype(np.float64)) & np.isnan(t.astype(np.float64)))
        row["max_abs_diff"] = float(diff[wrong].max()) if wrong.any() else 0.0
        row["share_differing"] = float(wrong.mean()) if wrong.size else 0.0
        row["explanation"] = ""
        if wrong.any():
            differs.add(o)
            carried = [v for v in node.inputs if v in differs]
            if node.op_type == "QuantizeLinear":
                x_ours = ours[b.renamed.get(node.inputs[0], node.inputs[0])]
                row.update(_quantize_explanation(node, b, theirs.get(node.inputs[0], x_ours), x_ours, t))
            elif carried:
                row["explanation"] = f"input {carried[0]!r} differs"
            else:
                row["explanation"] = "float arithmetic (equal inputs)" if a.dtype.kind == "f" else \
                    "differs on equal inputs"
    agree = not differs
    return {"model": str(path), "mode": "optimized" if optimized else "literal", "rows": rows, "agree": agree,
            "values": len(rows), "differing": len(differs)}


def format_comparison(result: dict) -> str:
    """The rows as a text table and a summary line."""
    head = f"{'op':<26} {'output':<40} {'dtype':<8} {'max|diff|':>10} {'differing':>10}  why"
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        mad = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.3g}"
        lines.append(f"{r['op'][-26:]:<26} {r['output'][-40:]:<40} {r['dtype']:<8} {mad:>10} "
                     f"{r['share_differing']:>10.2%}  {r['explanation']}")
    lines.append(f"{result['mode']}: {result['values'] - result['differing']} of {result['values']} values agree with "
                 f"onnxruntime exactly" + ("" if result["agree"] else f"; {result['differing']} differ"))
    return "\n".join(lines)
