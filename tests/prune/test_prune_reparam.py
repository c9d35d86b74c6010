"""Module-level pruning (re-parametrisation, iterative containers, global, remove) against torch."""
import copy

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from minicompress import prune
from prune_testing import NORMS, Holder, distinct_tensor, min_rel_gap, same_bytes, shapes, torch_holder

seeds = st.integers(0, 2**31 - 1)


def test_reparametrisation_layout(torch):
    w = distinct_tensor((3, 4), 0)
    m = Holder(w)
    param = m.weight
    prune.l1_unstructured(m, "weight", amount=0.5)
    assert m._parameters["weight_orig"] is param and "weight" not in m._parameters
    assert m.weight_mask.dtype == np.float32 and isinstance(m.weight, np.ndarray)
    assert list(m.state_dict()) == ["weight_orig", "weight_mask"]
    assert same_bytes(m.weight, m.weight_mask * param.data) and prune.is_pruned(m)
    assert np.signbit(m.weight[(m.weight_mask == 0) & (w < 0)]).all()  # pruned negatives are -0.0
    param.data = param.data * 2  # the forward pre-hook recomputes weight = mask * orig
    m(np.ones((3, 4), np.float32))
    assert same_bytes(m.weight, m.weight_mask * param.data)
    tm = torch_holder(torch, w)
    torch.nn.utils.prune.l1_unstructured(tm, "weight", amount=0.5)
    assert list(tm.state_dict()) == list(m.state_dict())


def _both(ours, theirs):
    """Run our call and torch's; both succeed, or both raise the same exception type."""
    errors = []
    for call in (ours, theirs):
        try:
            call()
            errors.append(None)
        except Exception as e:  # noqa: BLE001 - compared below
            errors.append(type(e))
    assert errors[0] == errors[1], errors
    assume(errors[0] is None)  # e.g. an int amount larger than what is left


def _run_ops(torch, ops, w):
    """Apply the same pruning sequence to a Holder and a torch twin; return both."""
    tp = torch.nn.utils.prune
    m, tm = Holder(w), torch_holder(torch, w)
    for op in ops:
        kind, args = op[0], op[1:]
        if kind == "l1":
            _both(lambda: prune.l1_unstructured(m, "weight", amount=args[0]),
                  lambda: tp.l1_unstructured(tm, "weight", amount=args[0]))
        elif kind == "ln":
            amount, n, dim = args
            current = tm.weight.detach()  # avoid near-ties among the channels still alive (torch's view)
            others = [d for d in range(current.dim()) if d != dim % current.dim()]
            alive = tm.weight_mask.sum(dim=others) != 0 if prune.is_pruned(m) else slice(None)
            assume(min_rel_gap(torch.norm(current, p=n, dim=others)[alive].numpy()) > 1e-3)
            _both(lambda: prune.ln_structured(m, "weight", amount=amount, n=n, dim=dim),
                  lambda: tp.ln_structured(tm, "weight", amount=amount, n=n, dim=dim))
        elif kind == "custom":
            _both(lambda: prune.custom_from_mask(m, "weight", mask=args[0]),
                  lambda: tp.custom_from_mask(tm, "weight", mask=torch.from_numpy(args[0])))
        else:
            _both(lambda: prune.identity(m, "weight"), lambda: tp.identity(tm, "weight"))
        assert same_bytes(m.weight_mask, tm.weight_mask) and same_bytes(m.weight, tm.weight)
    return m, tm


@st.composite
def op_sequences(draw):
    shape = draw(shapes(min_dims=2, max_dims=3, max_side=5))
    ops = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["l1", "ln", "custom", "identity"]))
        if kind == "l1":
            ops.append(("l1", draw(st.one_of(st.floats(0, 1), st.integers(0, 2)))))
        elif kind == "ln":
            dim = draw(st.integers(-len(shape), len(shape) - 1))
            ops.append(("ln", draw(st.one_of(st.floats(0, 1), st.integers(0, 1))), draw(st.sampled_from(NORMS)), dim))
        elif kind == "custom":
            ops.append(("custom", (np.random.default_rng(len(ops)).random(shape) < 0.8).astype(np.float32)))
        else:
            ops.append(("identity",))
    return shape, ops


@given(op_sequences(), seeds)
def test_iterative_sequences_match_torch(torch, shape_ops, seed):
    shape, ops = shape_ops
    assume(all(op[0] != "ln" or op[2] != "fro" or len(shape) <= 3 for op in ops))
    w = distinct_tensor(shape, seed)
    m, tm = _run_ops(torch, ops, w)
    hooks = list(m.parametrizations()["weight"].chain)
    assert len(hooks) == 1 and (len(ops) == 1 or isinstance(hooks[0], prune.PruningContainer))
    prune.remove(m, "weight")
    torch.nn.utils.prune.remove(tm, "weight")
    assert same_bytes(m.weight.data, tm.weight) and not prune.is_pruned(m)
    assert list(m._parameters) == ["weight"] and not m._buffers and not m._grad_hooks


def test_two_half_prunes_give_75_percent_and_structured_skips_dead_channels(torch):
    m = Holder(distinct_tensor((4, 10), 3))
    prune.l1_unstructured(m, "weight", 0.5)
    prune.l1_unstructured(m, "weight", 0.5)
    assert (m.weight_mask == 0).sum() == 30
    m = Holder(distinct_tensor((4, 3), 3))
    prune.ln_structured(m, "weight", amount=1, n=2, dim=0)
    prune.ln_structured(m, "weight", amount=1, n=2, dim=0)
    assert (m.weight_mask.sum(axis=1) == 0).sum() == 2
    with pytest.raises(ValueError):  # only 2 channels are left
        prune.ln_structured(m, "weight", amount=3, n=2, dim=0)


@given(st.lists(shapes(max_dims=3), min_size=1, max_size=3), seeds, st.floats(0, 1), st.booleans(), st.booleans())
def test_global_unstructured_matches_torch(torch, shape_list, seed, amount, pre_prune, scores):
    tp = torch.nn.utils.prune
    n = sum(int(np.prod(s)) for s in shape_list)
    flat = distinct_tensor((n,), seed)
    ws, start = [], 0
    for s in shape_list:
        ws.append(flat[start:start + int(np.prod(s))].reshape(s))
        start += int(np.prod(s))
    ms, tms = [Holder(w) for w in ws], [torch_holder(torch, w) for w in ws]
    if pre_prune:
        prune.l1_unstructured(ms[0], "weight", 0.3)
        tp.l1_unstructured(tms[0], "weight", 0.3)
    imp = tim = None
    if scores:
        s0 = distinct_tensor(shape_list[-1], seed + 1)
        imp, tim = {(ms[-1], "weight"): s0}, {(tms[-1], "weight"): torch.from_numpy(s0)}
    prune.global_unstructured([(m, "weight") for m in ms], prune.L1Unstructured, importance_scores=imp, amount=amount)
    tp.global_unstructured([(m, "weight") for m in tms], tp.L1Unstructured, importance_scores=tim, amount=amount)
    for m, tm in zip(ms, tms):
        assert same_bytes(m.weight_mask, tm.weight_mask) and same_bytes(m.weight, tm.weight)


def test_global_unstructured_refuses_structured_methods():
    m = Holder(distinct_tensor((3, 3), 0))
    with pytest.raises(TypeError, match="unstructured"):
        prune.global_unstructured([(m, "weight")], prune.LnStructured, amount=0.5, n=2, dim=0)
    with pytest.raises(TypeError):
        prune.global_unstructured(5, prune.L1Unstructured, amount=0.5)
    assert not prune.is_pruned(m)


def _snapshot(m):
    return (list(m._parameters), list(m._buffers), list(m.parametrizations().items()), dict(m.__dict__).keys(),
            {k: v.tobytes() for k, v in m.state_dict().items()})


@pytest.mark.parametrize("pre", [False, True])
def test_bad_input_leaves_the_module_untouched(pre):
    m = Holder(distinct_tensor((3, 4), 0))
    m.register_buffer("buf", np.ones(3, np.float32))
    if pre:
        prune.l1_unstructured(m, "weight", 0.25)
    before = _snapshot(m)
    bad = [(AttributeError, lambda: prune.l1_unstructured(m, "nope", 0.5)),
           (TypeError, lambda: prune.l1_unstructured(m, "buf", 0.5)),
           (ValueError, lambda: prune.ln_structured(m, "weight", 0.5, n=2, dim=0, importance_scores=np.ones(3))),
           (IndexError, lambda: prune.ln_structured(m, "weight", 0.5, n=2, dim=2)),
           (ValueError, lambda: prune.l1_unstructured(m, "weight", 13)),
           (ValueError, lambda: prune.l1_unstructured(m, "weight", 1.5)),
           (ValueError, lambda: prune.custom_from_mask(m, "weight", np.ones(4)))]
    for error, call in bad:
        with pytest.raises(error):
            call()
        assert _snapshot(m) == before
    with pytest.raises(ValueError, match="has to be pruned"):
        prune.remove(Holder(np.ones(2)), "weight")
    flat = Holder(np.arange(1.0, 5.0))
    with pytest.raises(ValueError, match="multidimensional"):
        prune.ln_structured(flat, "weight", 0.5, n=1, dim=0)
    assert not prune.is_pruned(flat) and list(flat._parameters) == ["weight"]


def test_identity_is_idempotent_on_modules():
    m = Holder(distinct_tensor((3, 4), 0))
    prune.l1_unstructured(m, "weight", 0.5)
    mask, weight = m.weight_mask.tobytes(), m.weight.tobytes()
    prune.identity(m, "weight")
    prune.identity(m, "weight")
    assert m.weight_mask.tobytes() == mask and m.weight.tobytes() == weight
    assert len(m.parametrizations()["weight"].chain[0]) == 3


def test_importance_scores_decide_but_orig_is_masked(torch):
    w = distinct_tensor((4, 5), 1)
    scores = distinct_tensor((4, 5), 2)
    m, tm = Holder(w), torch_holder(torch, w)
    prune.ln_structured(m, "weight", 2, n=1, dim=1, importance_scores=scores)
    torch.nn.utils.prune.ln_structured(tm, "weight", 2, n=1, dim=1, importance_scores=torch.from_numpy(scores))
    assert same_bytes(m.weight_mask, tm.weight_mask) and same_bytes(m.weight, tm.weight)


def test_random_methods_on_modules_are_monotone():
    m = Holder(distinct_tensor((6, 5), 0))
    masks = []
    for step in range(4):
        prune.random_unstructured(m, "weight", 0.3, rng=step)
        prune.random_structured(m, "weight", 1, dim=1, rng=step)
        masks.append(m.weight_mask.copy())
    for a, b in zip(masks, masks[1:]):
        assert np.all(b <= a)
    assert (masks[0] == 0).sum() >= 9


def test_deepcopy_keeps_hooks_pointing_at_the_copy():
    m = Holder(distinct_tensor((2, 3), 0))
    prune.l1_unstructured(m, "weight", 0.5)
    c = copy.deepcopy(m)
    x = np.ones((2, 3), np.float32)
    c(x)
    c.backward(np.ones((2, 3), np.float32))
    assert m.weight_orig.grad is None and same_bytes(c.weight_orig.grad, c.weight_mask)


def test_to_float64_casts_mask_orig_and_weight():
    m = Holder(distinct_tensor((2, 3), 0))
    prune.l1_unstructured(m, "weight", 0.5)
    m.to(np.float64)
    assert m.weight.dtype == m.weight_mask.dtype == m.weight_orig.data.dtype == np.float64
