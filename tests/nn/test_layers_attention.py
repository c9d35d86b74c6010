"""Attention: scaled dot-product attention, MultiheadAttention, TransformerEncoderLayer / TransformerEncoder.
PyTorch as the oracle for outputs, attention weights, d inputs and every parameter gradient; float64 finite
differences for every backward; PyTorch's state-dict keys; errors naming the layer and the shapes."""
import numpy as np
import pytest
from gradcheck import check_module_grads, numerical_grad, rel_error
from hypothesis import given, strategies as st
from oracle import assert_close, to_torch_state

from minicompress import nn
from minicompress.nn.functional.attention import (scaled_dot_product_attention, scaled_dot_product_attention_backward,
                                                  scaled_dot_product_attention_forward)

seeds = st.integers(0, 2**32 - 1)
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched")   # PyTorch's, on bool + float masks


def _normal(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def _randomize(module, seed):
    """Every parameter ~ N(0, 1/4): no zero biases (PyTorch's init zeroes MultiheadAttention's), no unit gammas."""
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data[...] = rng.standard_normal(p.data.shape) * 0.5
    return module


def _torch_call(torch, call: dict) -> dict:
    """Call keywords for PyTorch: arrays (masks) as tensors."""
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in call.items()}


def _assert_param_grads(ours, theirs) -> None:
    """The same parameter names in the same order, every gradient PyTorch's. scale=1: the softmax backward
    p * (dp - sum(dp * p)) and LayerNorm's can cancel far below their O(1) terms."""
    params = dict(theirs.named_parameters())
    assert [name for name, _ in ours.named_parameters()] == list(params)
    for name, p in ours.named_parameters():
        assert_close(p.grad, params[name].grad.numpy(), f"d {name}", scale=1.0)


def _assert_fd(loss, arrays: dict, analytic: dict, tol=1e-6, atol=1e-8) -> None:
    """Each analytic gradient against centred differences of ``loss()`` in the array it names (perturbed in
    place): relative error below ``tol``, or every entry within ``atol * max(1, |L|)`` -- a gradient that is
    tiny as a whole (a saturated softmax) is below what differences of L resolve (rounding of L / eps)."""
    floor = atol * max(1.0, abs(loss()))
    bad = {}
    for name, x in arrays.items():
        numeric = numerical_grad(lambda _: loss(), x)
        error = rel_error(analytic[name], numeric)
        if not (error < tol or np.abs(analytic[name] - numeric).max() <= floor):
            bad[name] = error
    assert not bad, f"finite-difference relative errors above {tol} (and entries off by more than {floor:.1e}): {bad}"


# ---------------------------------------------------------------------------- scaled dot-product attention
@st.composite
def sdpa_cases(draw):
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    L, S, E, Ev = (draw(st.integers(1, 4)) for _ in range(4))
    mask = draw(st.sampled_from([None, "bool", "float", "causal"]))
    mask_shape = draw(st.sampled_from([(L, S), (1, S), (L, 1), lead + (L, S)]))
    return lead, (L, S, E, Ev), mask, mask_shape, draw(st.sampled_from([None, 0.5, 2.0])), draw(seeds)


def _sdpa_inputs(case, dtype):
    lead, (L, S, E, Ev), mask, mask_shape, scale, seed = case
    rng = np.random.default_rng(seed)
    q, k, v = (_normal(rng, lead + shape, dtype) for shape in ((L, E), (S, E), (S, Ev)))
    kwargs = {"scale": scale, "is_causal": mask == "causal"}
    if mask == "bool":          # True = take part; whole rows of False happen (0 output, as PyTorch)
        kwargs["attn_mask"] = rng.random(mask_shape) < 0.7
    elif mask == "float":
        kwargs["attn_mask"] = _normal(rng, mask_shape, dtype)
    return q, k, v, kwargs, _normal(rng, lead + (L, Ev), dtype)


@given(sdpa_cases())
def test_sdpa_matches_torch(torch, case):
    q, k, v, kwargs, dout = _sdpa_inputs(case, np.float32)
    out, cache = scaled_dot_product_attention_forward(q, k, v, **kwargs)
    grads = scaled_dot_product_attention_backward(dout, cache)
    tensors = [torch.tensor(x, requires_grad=True) for x in (q, k, v)]
    mask = kwargs.pop("attn_mask", None)
    expected = torch.nn.functional.scaled_dot_product_attention(
        *tensors, attn_mask=None if mask is None else torch.from_numpy(mask), **kwargs)
    (expected * torch.from_numpy(dout)).sum().backward()
    assert_close(out, expected.detach().numpy(), "output")
    for name, g, t in zip(("d query", "d key", "d value"), grads, tensors):
        assert_close(g, t.grad.numpy(), name)
    np.testing.assert_array_equal(scaled_dot_product_attention(q, k, v, mask, is_causal=kwargs["is_causal"],
                                                               scale=kwargs["scale"]), out)


@given(sdpa_cases())
def test_sdpa_finite_differences(case):
    q, k, v, kwargs, dout = _sdpa_inputs(case, np.float64)
    _, cache = scaled_dot_product_attention_forward(q, k, v, **kwargs)
    dq, dk, dv = scaled_dot_product_attention_backward(dout, cache)

    def loss():
        return float(np.sum(scaled_dot_product_attention_forward(q, k, v, **kwargs)[0] * dout))
    _assert_fd(loss, {"q": q, "k": k, "v": v}, {"q": dq, "k": dk, "v": dv})


def test_sdpa_fully_masked_query_gives_zero_as_torch(torch):
    rng = np.random.default_rng(0)
    q, k, v = _normal(rng, (2, 3, 4)), _normal(rng, (2, 5, 4)), _normal(rng, (2, 5, 3))
    mask = rng.random((3, 5)) < 0.5
    mask[1] = False                                          # query 1 may attend to nothing
    out, cache = scaled_dot_product_attention_forward(q, k, v, attn_mask=mask)
    expected = torch.nn.functional.scaled_dot_product_attention(*map(torch.from_numpy, (q, k, v)),
                                                                attn_mask=torch.from_numpy(mask))
    assert not out[:, 1].any()
    assert_close(out, expected.numpy(), "output")
    dq, dk, dv = scaled_dot_product_attention_backward(np.ones_like(out), cache)
    assert not dq[:, 1].any() and np.isfinite(dk).all() and np.isfinite(dv).all()


@pytest.mark.parametrize("call, error, message", [
    (lambda q: scaled_dot_product_attention(q, q, q, dropout_p=0.1), NotImplementedError, "dropout_p must be 0"),
    (lambda q: scaled_dot_product_attention(q, q, q, enable_gqa=True), NotImplementedError, "enable_gqa"),
    (lambda q: scaled_dot_product_attention(q, q[..., :3], q), ValueError, r"key \(\.\.\., S, E\).*\(2, 4, 3\)"),
    (lambda q: scaled_dot_product_attention(q, q, q[:, :3]), ValueError, r"value \(\.\.\., S, Ev\)"),
    (lambda q: scaled_dot_product_attention(q, q, q, np.ones((3, 4), bool)), ValueError,
     r"attn_mask of shape \(3, 4\) does not broadcast .* \(2, 4, 4\)"),
    (lambda q: scaled_dot_product_attention(q, q, q, np.ones((4, 4), bool), is_causal=True), ValueError, "not both"),
    (lambda q: scaled_dot_product_attention(q, q, q, np.ones((4, 4), int)), TypeError, "boolean or floating"),
    (lambda q: scaled_dot_product_attention(q, q.astype(np.float64), q), TypeError, "one dtype"),
])
def test_sdpa_bad_inputs_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call(np.zeros((2, 4, 4), np.float32))


# ---------------------------------------------------------------------------- MultiheadAttention
@st.composite
def mha_cases(draw):
    """Constructor and call arguments with inputs; every query keeps key 0 (no NaN rows: tested apart)."""
    H, D = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kwargs = dict(embed_dim=H * D, num_heads=H, bias=draw(st.booleans()), add_bias_kv=draw(st.booleans()),
                  add_zero_attn=draw(st.booleans()), batch_first=draw(st.booleans()))
    self_attention = draw(st.booleans())
    if not self_attention and draw(st.booleans()):
        kwargs.update(kdim=draw(st.integers(1, 4)), vdim=draw(st.integers(1, 4)))
    unbatched = draw(st.booleans())
    N, L = 1 if unbatched else draw(st.integers(1, 3)), draw(st.integers(1, 4))
    S = L if self_attention else draw(st.integers(1, 4))
    attn_mask = draw(st.sampled_from([None, "bool", "float"]))
    call = dict(need_weights=draw(st.booleans()), average_attn_weights=draw(st.booleans()),
                is_causal=attn_mask is not None and draw(st.booleans()))
    masks = dict(key_padding_mask=draw(st.sampled_from([None, "bool", "float"])), attn_mask=attn_mask,
                 attn_mask_3d=draw(st.booleans()))
    return kwargs, self_attention, unbatched, (N, L, S), masks, call, draw(st.booleans()), draw(seeds)


def _mha_inputs(case, dtype):
    """(inputs (query, key, value), call keywords, d y, d weights or None) for a case."""
    kwargs, self_attention, unbatched, (N, L, S), masks, call, _, seed = case
    rng, call = np.random.default_rng(seed), dict(call)
    E, H = kwargs["embed_dim"], kwargs["num_heads"]

    def shape(T, dim):
        return (T, dim) if unbatched else (N, T, dim) if kwargs["batch_first"] else (T, N, dim)
    query = _normal(rng, shape(L, E), dtype)
    key = query if self_attention else _normal(rng, shape(S, kwargs.get("kdim", E)), dtype)
    value = query if self_attention else _normal(rng, shape(S, kwargs.get("vdim", E)), dtype)
    mask_shapes = {"key_padding_mask": (S,) if unbatched else (N, S),
                   "attn_mask": (N * H, L, S) if masks["attn_mask_3d"] else (L, S)}
    for name, shape_ in mask_shapes.items():
        if masks[name] == "bool":
            mask = rng.random(shape_) < 0.4                  # True = masked out
            mask[..., 0] = False
            call[name] = mask
        elif masks[name] == "float":
            call[name] = _normal(rng, shape_, dtype)
    S_all = S + kwargs["add_bias_kv"] + kwargs["add_zero_attn"]
    w_shape = (L, S_all) if call["average_attn_weights"] else (H, L, S_all)
    d_weights = _normal(rng, w_shape if unbatched else (N,) + w_shape, dtype) if call["need_weights"] else None
    return (query, key, value), call, _normal(rng, query.shape, dtype), d_weights


def _mha_pair(torch, kwargs, seed=0):
    ours = _randomize(nn.MultiheadAttention(**kwargs), seed)
    theirs = torch.nn.MultiheadAttention(**kwargs)
    theirs.load_state_dict(to_torch_state(torch, ours.state_dict()), strict=True)
    return ours, theirs


def _torch_mha(torch, theirs, inputs, call, d_out, d_weights):
    """PyTorch's outputs and gradients of L = sum(y * d y) + sum(w * d w); self-attention passes one tensor."""
    tensors = [torch.tensor(x, requires_grad=True) for x in inputs[:1 if inputs[0] is inputs[1] else 3]]
    q, k, v = tensors * 3 if len(tensors) == 1 else tensors
    y, w = theirs(q, k, v, **_torch_call(torch, call))
    loss = (y * torch.from_numpy(d_out)).sum()
    if d_weights is not None:
        loss = loss + (w * torch.from_numpy(d_weights)).sum()
    loss.backward()
    return y.detach().numpy(), None if w is None else w.detach().numpy(), [t.grad.numpy() for t in tensors]


def _input_grads(inputs, grads):
    """Our (d query, d key, d value), summed for self-attention (one tensor fed all three)."""
    return [sum(grads)] if inputs[0] is inputs[1] else list(grads)


def _case(embed_dim=4, num_heads=2, self_attention=False, unbatched=False, sizes=(2, 3, 3), key_padding_mask=None,
          attn_mask=None, attn_mask_3d=False, train=True, seed=0, **kwargs):
    """An ``mha_cases`` case by hand: remaining keywords go to the constructor or to the call."""
    call = dict(need_weights=True, average_attn_weights=True, is_causal=False)
    call.update((k, kwargs.pop(k)) for k in list(kwargs) if k in call)
    kwargs = dict(embed_dim=embed_dim, num_heads=num_heads, bias=True, add_bias_kv=False, add_zero_attn=False,
                  batch_first=False) | kwargs
    masks = dict(key_padding_mask=key_padding_mask, attn_mask=attn_mask, attn_mask_3d=attn_mask_3d)
    return kwargs, self_attention, unbatched, sizes, masks, call, train, seed


CHOSEN_MHA_CASES = [   # what a few random draws may miss: per-(sample, head) masks, causal hint with extra keys
    _case(attn_mask="bool", attn_mask_3d=True, average_attn_weights=False),
    _case(attn_mask="float", attn_mask_3d=True, key_padding_mask="bool", need_weights=False, batch_first=True),
    _case(embed_dim=6, num_heads=3, sizes=(3, 2, 4), attn_mask="bool", attn_mask_3d=True, add_bias_kv=True,
          add_zero_attn=True, key_padding_mask="float"),
    _case(self_attention=True, sizes=(2, 4, 4), attn_mask="bool", is_causal=True, need_weights=False,
          add_bias_kv=True, add_zero_attn=True),
    _case(unbatched=True, sizes=(1, 3, 2), attn_mask="float", attn_mask_3d=True, kdim=3, vdim=2, bias=False),
]


@given(mha_cases())
def test_mha_matches_torch(torch, case):
    _check_mha_against_torch(torch, case)


@pytest.mark.parametrize("case", CHOSEN_MHA_CASES)
def test_mha_matches_torch_on_chosen_cases(torch, case):
    _check_mha_against_torch(torch, case)


def _check_mha_against_torch(torch, case):
    kwargs, train = case[0], case[6]
    ours, theirs = _mha_pair(torch, kwargs, case[-1])
    ours.train(train), theirs.train(train)
    inputs, call, d_out, d_weights = _mha_inputs(case, np.float32)
    y, w = ours(*inputs, **call)
    grads = _input_grads(inputs, ours.backward((d_out, d_weights)))
    ty, tw, tgrads = _torch_mha(torch, theirs, inputs, call, d_out, d_weights)
    assert_close(y, ty, "output")
    assert (w is None) == (tw is None)
    if w is not None:
        assert_close(w, tw, "attention weights")
    for i, (g, t) in enumerate(zip(grads, tgrads)):
        assert_close(g, t, f"d input {i}", scale=1.0)        # cancels as the parameter gradients do
    _assert_param_grads(ours, theirs)


@given(mha_cases())
def test_mha_finite_differences(case):
    _check_mha_finite_differences(case)


@pytest.mark.parametrize("case", CHOSEN_MHA_CASES)
def test_mha_finite_differences_on_chosen_cases(case):
    _check_mha_finite_differences(case)


def _check_mha_finite_differences(case):
    ours = _randomize(nn.MultiheadAttention(**case[0]), case[-1]).to(np.float64)
    inputs, call, d_out, d_weights = _mha_inputs(case, np.float64)
    ours(*inputs, **call)
    grads = _input_grads(inputs, ours.backward((d_out, d_weights)))

    def loss():
        with nn.no_grad():
            y, w = ours(*inputs, **call)
        return float(np.sum(y * d_out) + (0.0 if w is None else np.sum(w * d_weights)))
    arrays = {f"input {i}": x for i, x in enumerate(inputs[:len(grads)])}
    analytic = {f"input {i}": g for i, g in enumerate(grads)}
    arrays.update((name, p.data) for name, p in ours.named_parameters())
    analytic.update((name, p.grad) for name, p in ours.named_parameters())
    _assert_fd(loss, arrays, analytic)


@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_fully_masked_query_as_torch(torch, need_weights):
    """Sample 0 masks every key: NaN with need_weights=True (plain softmax), zero attention with
    need_weights=False (PyTorch's SDPA), in the output and in every gradient."""
    ours, theirs = _mha_pair(torch, dict(embed_dim=4, num_heads=2))
    rng = np.random.default_rng(1)
    x = _normal(rng, (3, 2, 4))
    kpm = np.zeros((2, 3), bool)
    kpm[0] = True
    call = dict(key_padding_mask=kpm, need_weights=need_weights)
    d_out = _normal(rng, x.shape)
    y, w = ours(x, x, x, **call)
    (dx,) = _input_grads((x, x, x), ours.backward(d_out))
    ty, tw, (tdx,) = _torch_mha(torch, theirs, (x, x, x), call, d_out, None)
    assert np.isnan(y[:, 0]).all() == need_weights and np.isfinite(y[:, 1]).all()
    grads = [(y, ty), (dx, tdx)] + [(p.grad, q.grad.numpy()) for p, q in zip(ours.parameters(), theirs.parameters())]
    for ours_, theirs_ in grads + ([(w, tw)] if need_weights else []):
        np.testing.assert_array_equal(np.isnan(ours_), np.isnan(theirs_))
        np.testing.assert_allclose(np.nan_to_num(ours_), np.nan_to_num(theirs_), rtol=1e-5, atol=1e-6)
    if not need_weights:
        np.testing.assert_allclose(y[:, 0], np.broadcast_to(ours.out_proj.bias.data, (3, 4)), rtol=1e-6)


def test_mha_dropout_drops_weights_in_training_only():
    """Inverted dropout of the attention weights (the returned weights are those after dropout, as PyTorch's);
    evaluation is the dropout-free layer; the backward follows the forward's mask (FD with a re-seeded generator)."""
    mha = nn.MultiheadAttention(4, 2, dropout=0.5, rng=0).to(np.float64)
    rng = np.random.default_rng(2)
    x, d_out = rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 2, 4))
    mha.eval()
    y_eval, w_eval = mha(x, x, x, average_attn_weights=False)
    mha.clear_caches()
    mha.train()
    nn.manual_seed(7)
    y, w = mha(x, x, x, average_attn_weights=False)
    assert np.all(np.isclose(w, 0) | np.isclose(w, 2 * w_eval)) and (w == 0).any() and not np.allclose(y, y_eval)
    mha.zero_grad()
    (dx,) = _input_grads((x, x, x), mha.backward(d_out))

    def loss():
        nn.manual_seed(7)
        with nn.no_grad():
            return float(np.sum(mha(x, x, x, average_attn_weights=False)[0] * d_out))
    _assert_fd(loss, {"x": x, "in_proj_weight": mha.in_proj_weight.data},
               {"x": dx, "in_proj_weight": mha.in_proj_weight.grad})


@pytest.mark.parametrize("kwargs", [dict(), dict(bias=False), dict(add_bias_kv=True), dict(kdim=3, vdim=5),
                                    dict(kdim=3, add_bias_kv=True, bias=False)])
def test_mha_state_dict_keys_and_init_as_torch(torch, kwargs):
    ours, theirs = nn.MultiheadAttention(6, 2, **kwargs, rng=0), torch.nn.MultiheadAttention(6, 2, **kwargs)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
           [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    assert repr(ours) == repr(theirs)
    for name, p in ours.named_parameters():
        if name.endswith("proj_weight"):                     # xavier_uniform_: U(+-sqrt(6 / (fan_in + fan_out)))
            bound = np.sqrt(6 / sum(p.data.shape))
            assert np.abs(p.data).max() <= bound and np.abs(p.data).max() > 0.5 * bound
        elif name in ("in_proj_bias", "out_proj.bias"):
            assert not p.data.any()
    assert ours.state_dict()["out_proj.weight"].std() > 0


def test_mha_calls_stack_and_hooks_see_all_inputs():
    """Two calls, two backwards in reverse order: gradients add up; a pre-hook sees the eight inputs."""
    mha = nn.MultiheadAttention(4, 2, rng=0)
    seen = []
    mha.register_forward_pre_hook(lambda module, inputs: seen.append(len(inputs)))
    rng = np.random.default_rng(3)
    a, b, d = _normal(rng, (3, 1, 4)), _normal(rng, (2, 1, 4)), _normal(rng, (3, 1, 4))
    mha(a, b, b)
    mha(a, a, a, need_weights=False)
    da_self = sum(mha.backward(d))
    da, db1, db2 = mha.backward((d, None))
    grad = mha.in_proj_weight.grad.copy()
    mha.zero_grad()
    for call in (lambda: mha(a, b, b), lambda: mha(a, a, a)):
        call()
        mha.backward(d)
    np.testing.assert_allclose(mha.in_proj_weight.grad, grad, rtol=1e-5, atol=1e-6)
    assert seen == [8, 8, 8, 8] and da_self.shape == da.shape == (3, 1, 4) and db1.shape == db2.shape == (2, 1, 4)
    with nn.no_grad():
        mha(a, a, a)
    with pytest.raises(RuntimeError, match="without a forward"):
        mha.backward(d)


@pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated", "ignore:torch.quantize_per_tensor")
def test_mha_through_the_engine_seams(torch):
    """Pruning (a parametrization) of in_proj_weight and of out_proj.weight: forward and backward read the masked
    weights and send masked gradients to the originals, PyTorch's keys; quantize_dynamic leaves out_proj float
    and quantizes the feed-forward Linears, as PyTorch's mappings (exact types) do."""
    from minicompress import prune, quant
    mha = _randomize(nn.MultiheadAttention(4, 2), 0)
    reference = nn.MultiheadAttention(4, 2)
    prune.l1_unstructured(mha, "in_proj_weight", 0.5)
    prune.l1_unstructured(mha.out_proj, "weight", 0.5)
    state = mha.state_dict()
    assert sorted(state) == ["in_proj_bias", "in_proj_weight_mask", "in_proj_weight_orig", "out_proj.bias",
                             "out_proj.weight_mask", "out_proj.weight_orig"]
    reference.load_state_dict({"in_proj_weight": state["in_proj_weight_orig"] * state["in_proj_weight_mask"],
                               "in_proj_bias": state["in_proj_bias"], "out_proj.bias": state["out_proj.bias"],
                               "out_proj.weight": state["out_proj.weight_orig"] * state["out_proj.weight_mask"]})
    x = _normal(np.random.default_rng(5), (3, 2, 4))
    (y, _), (y_ref, _) = mha(x, x, x), reference(x, x, x)
    mha.backward(np.ones_like(y)), reference.backward(np.ones_like(y))
    np.testing.assert_allclose(y, y_ref, rtol=1e-6)
    np.testing.assert_allclose(mha.in_proj_weight_orig.grad, reference.in_proj_weight.grad * mha.in_proj_weight_mask,
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mha.out_proj.weight_orig.grad,
                               reference.out_proj.weight.grad * mha.out_proj.weight_mask, rtol=1e-5, atol=1e-7)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0), 1)
    theirs = torch.ao.quantization.quantize_dynamic(
        torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(4, 2, 8), 1, enable_nested_tensor=False),
        {torch.nn.Linear})
    ours = quant.quantize_dynamic(encoder, {nn.Linear}, dtype="qint8")
    kinds = {name: type(m).__name__ for name, m in theirs.named_modules() if name.endswith(("linear1", "out_proj"))}
    assert kinds == {"layers.0.self_attn.out_proj": "NonDynamicallyQuantizableLinear", "layers.0.linear1": "Linear"}
    assert type(ours.get_submodule("layers.0.self_attn.out_proj")) is nn.layers.attention.NonDynamicallyQuantizableLinear
    assert type(ours.get_submodule("layers.0.linear1")).__name__ == "DynamicQuantizedLinear"


def _bad_mha_calls():
    x, q3 = np.zeros((3, 2, 4), np.float32), np.zeros((3, 2, 3), np.float32)
    kpm, mask = np.zeros((2, 3), bool), np.zeros((3, 3), bool)
    mha = nn.MultiheadAttention(4, 2)
    return [
        (lambda: nn.MultiheadAttention(6, 4), ValueError, r"MultiheadAttention\(embed_dim=6, num_heads=4\): embed_dim "
                                                           r"must be divisible by num_heads"),
        (lambda: nn.MultiheadAttention(4, 2, dropout=1.5), ValueError, "dropout probability"),
        (lambda: mha(q3, q3, q3), ValueError, r"MultiheadAttention\(embed_dim=4, num_heads=2\): expected query "
                                              r"\(L, N, 4\), key \(S, N, 4\) and value \(S, N, 4\), got \(3, 2, 3\)"),
        (lambda: mha(x, x[:2], x), ValueError, r"got \(3, 2, 4\), \(2, 2, 4\), \(3, 2, 4\)"),
        (lambda: mha(x, x[:, :1], x[:, :1]), ValueError, "expected query"),
        (lambda: mha(x, x[0], x), ValueError, "all 3-D"),
        (lambda: mha(x, x, x, key_padding_mask=kpm.T), ValueError,
         r"key_padding_mask of shape \(2, 3\) \(N=2, num_heads=2, L=3, S=3\), got \(3, 2\)"),
        (lambda: mha(x, x, x, attn_mask=mask[:2]), ValueError,
         r"attn_mask of shape \(3, 3\) or \(4, 3, 3\).*got \(2, 3\)"),
        (lambda: mha(x, x, x, attn_mask=np.zeros((2, 3, 3), bool)), ValueError, r"got \(2, 3, 3\)"),
        (lambda: mha(x, x, x, attn_mask=mask.astype(int)), TypeError, "boolean and floating-point attn_mask"),
        (lambda: mha(x, x, x, is_causal=True), ValueError, "Need attn_mask if specifying the is_causal hint"),
        (lambda: mha(x.astype(np.float64), x, x), TypeError, "does not match the parameter dtype"),
    ]


@pytest.mark.parametrize("index", range(len(_bad_mha_calls())))
def test_mha_bad_inputs_are_named(index):
    call, error, message = _bad_mha_calls()[index]
    with pytest.raises(error, match=message):
        call()


def test_mha_backward_checks_its_gradients():
    mha = nn.MultiheadAttention(4, 2)
    x = np.zeros((3, 2, 4), np.float32)
    mha(x, x, x, need_weights=False)
    with pytest.raises(ValueError, match="need_weights=False"):
        mha.backward((x, np.zeros((2, 3, 3), np.float32)))
    mha(x, x, x)
    with pytest.raises(ValueError, match=r"backward expected a gradient of shape \(2, 3, 3\)"):
        mha.backward((x, np.zeros((2, 3, 4), np.float32)))


# ---------------------------------------------------------------------------- TransformerEncoderLayer / Encoder
class _Call(nn.Module):
    """``module(x, **call)`` as a one-input module, for ``check_module_grads``."""

    def __init__(self, module, **call):
        super().__init__()
        self.module, self.call = module, call

    def forward(self, x):
        return self.module(x, **self.call)

    def backward(self, grad_output):
        return self.module.backward(grad_output)


@st.composite
def encoder_cases(draw):
    H, D = draw(st.sampled_from([(1, 3), (3, 1), (2, 2), (3, 2), (1, 4)]))      # d_model >= 3: see the LayerNorm test
    kwargs = dict(d_model=H * D, nhead=H, dim_feedforward=draw(st.integers(1, 6)), dropout=0.0,
                  activation=draw(st.sampled_from(["relu", "gelu", "GELU(approximate='tanh')"])),
                  layer_norm_eps=draw(st.sampled_from([1e-5, 1e-3])), batch_first=draw(st.booleans()),
                  norm_first=draw(st.booleans()), bias=draw(st.booleans()))
    unbatched = draw(st.booleans())
    N, S = 1 if unbatched else draw(st.integers(1, 3)), draw(st.integers(1, 4))
    masks = (draw(st.sampled_from([None, "bool", "float", "causal"])), draw(st.sampled_from([None, "bool", "float"])))
    return kwargs, unbatched, (N, S), masks, draw(st.sampled_from([False, True, None])), draw(st.booleans()), \
        draw(st.integers(0, 2)), draw(seeds)


def _encoder_pair(torch, case):
    """(ours, PyTorch's) on the same random weights: a layer, or an encoder of that many layers (+ final norm)."""
    kwargs, num_layers, seed = dict(case[0]), case[6], case[-1]
    activation = kwargs.pop("activation")
    ours_act, torch_act = ((nn.GELU("tanh"), torch.nn.GELU("tanh")) if activation.startswith("GELU")
                           else (activation, activation))
    ours = nn.TransformerEncoderLayer(**kwargs, activation=ours_act, rng=seed)
    theirs = torch.nn.TransformerEncoderLayer(**kwargs, activation=torch_act)
    if num_layers:                                        # a final norm with two layers
        E, norm = kwargs["d_model"], num_layers == 2
        ours = nn.TransformerEncoder(ours, num_layers, nn.LayerNorm(E) if norm else None)
        theirs = torch.nn.TransformerEncoder(theirs, num_layers, torch.nn.LayerNorm(E) if norm else None,
                                             enable_nested_tensor=False)
    _randomize(ours, seed)
    theirs.load_state_dict(to_torch_state(torch, ours.state_dict()), strict=True)
    return ours, theirs


def _encoder_inputs(case, dtype):
    """(src, call keywords, d y); every query keeps key 0 unmasked."""
    kwargs, unbatched, (N, S), (src_mask, padding), is_causal, _, num_layers, seed = case
    rng = np.random.default_rng(seed + 1)
    E = kwargs["d_model"]
    src = _normal(rng, (S, E) if unbatched else (N, S, E) if kwargs["batch_first"] else (S, N, E), dtype)
    call = {}
    if src_mask == "causal":
        call["src_mask"] = np.triu(np.ones((S, S), bool), 1)
    elif src_mask == "bool":
        call["src_mask"] = rng.random((S, S)) < 0.4
        call["src_mask"][:, 0] = False
    elif src_mask == "float":
        call["src_mask"] = _normal(rng, (S, S), dtype)
    if is_causal is None and not num_layers:
        is_causal = False                                      # None (detect) is the encoder's; a layer wants a bool
    call["is_causal"] = is_causal and "src_mask" in call      # True needs a mask
    if padding == "bool":
        call["src_key_padding_mask"] = rng.random((S,) if unbatched else (N, S)) < 0.4
        call["src_key_padding_mask"][..., 0] = False
    elif padding == "float":
        call["src_key_padding_mask"] = _normal(rng, (S,) if unbatched else (N, S), dtype)
    if num_layers and "src_mask" in call:
        call["mask"] = call.pop("src_mask")                    # TransformerEncoder's name
    return src, call, _normal(rng, src.shape, dtype)


@given(encoder_cases())
def test_encoder_layer_and_encoder_match_torch(torch, case):
    ours, theirs = _encoder_pair(torch, case)
    train = case[5]
    ours.train(train), theirs.train(train)
    if not case[6]:                                       # PyTorch's encoder repr folds equal layers: "2 x ..."
        assert repr(ours) == repr(theirs)
    src, call, d_out = _encoder_inputs(case, np.float32)
    y = ours(src, **call)
    dx = ours.backward(d_out)
    xt = torch.tensor(src, requires_grad=True)
    yt = theirs(xt, **_torch_call(torch, call))
    (yt * torch.from_numpy(d_out)).sum().backward()
    assert_close(y, yt.detach().numpy(), "output")
    assert_close(dx, xt.grad.numpy(), "d input", scale=1.0)     # cancels as the parameter gradients do
    _assert_param_grads(ours, theirs)


@given(encoder_cases())
def test_encoder_layer_and_encoder_finite_differences(case):
    kwargs = dict(case[0])
    if kwargs["activation"].startswith("GELU"):
        kwargs["activation"] = nn.GELU("tanh")
    layer = nn.TransformerEncoderLayer(**kwargs)
    module = _randomize(nn.TransformerEncoder(layer, case[6], nn.LayerNorm(kwargs["d_model"])) if case[6] else layer,
                        case[-1])
    src, call, d_out = _encoder_inputs(case, np.float64)
    # eps 1e-5, not 1e-6: some gradients cancel to ~1e-3 of their terms (norm2.bias into a width-1 linear1),
    # where the rounding of L / eps dominates the difference quotient
    check_module_grads(_Call(module.train(case[5]), **call), src, d_out, eps=1e-5)


def test_encoder_copies_the_layer_and_keeps_torch_keys(torch):
    layer = nn.TransformerEncoderLayer(4, 2, 8, rng=0)
    encoder = nn.TransformerEncoder(layer, 2, nn.LayerNorm(4))
    theirs = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(4, 2, 8), 2, torch.nn.LayerNorm(4),
                                         enable_nested_tensor=False)
    assert [(k, v.shape) for k, v in encoder.state_dict().items()] == \
           [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    a, b = encoder.layers[0].self_attn.in_proj_weight, encoder.layers[1].self_attn.in_proj_weight
    assert a is not b and a is not layer.self_attn.in_proj_weight and np.array_equal(a.data, b.data)


def test_causal_hint_as_torch(torch):
    """An encoder detects a causal mask (is_causal=None); an explicit hint with another mask and no padding
    mask makes PyTorch's layers use the causal mask instead (the hint wins), with a padding mask the given mask."""
    case = (dict(d_model=4, nhead=2, dim_feedforward=3, dropout=0.0, activation="relu", layer_norm_eps=1e-5,
                 batch_first=False, norm_first=False, bias=True), False, (2, 4), (None, None), None, True, 1, 5)
    ours, theirs = _encoder_pair(torch, case)
    src = _normal(np.random.default_rng(0), (4, 2, 4))
    causal, other = np.triu(np.ones((4, 4), bool), 1), np.eye(4, dtype=bool)[::-1].copy()
    padding = np.zeros((2, 4), bool)
    from minicompress.nn.layers.transformer import detect_causal_mask
    assert detect_causal_mask(causal, None, 4, np.float32) and not detect_causal_mask(other, None, 4, np.float32)
    assert detect_causal_mask(np.where(causal, -np.inf, 0.0), None, 4, np.float32)
    with nn.no_grad():
        for call in (dict(mask=causal), dict(mask=other, is_causal=True),
                     dict(mask=other, is_causal=True, src_key_padding_mask=padding)):
            expected = theirs(torch.from_numpy(src), **_torch_call(torch, call))
            assert_close(ours(src, **call), expected.detach().numpy(), str(call))
    np.testing.assert_allclose(ours(src, mask=other, is_causal=True), ours(src, mask=causal), rtol=1e-6)


def test_encoder_layer_dropout():
    """Training draws new masks (global generator); evaluation is dropout-free; FD with a re-seeded generator."""
    layer = nn.TransformerEncoderLayer(4, 2, 6, dropout=0.3, rng=0).to(np.float64)
    rng = np.random.default_rng(4)
    x, d_out = rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 2, 4))
    with nn.no_grad():
        y_eval = layer.eval()(x)
        y_a, y_b = layer.train()(x), layer(x)
        assert not np.allclose(y_a, y_eval) and not np.allclose(y_a, y_b)
        no_dropout = nn.TransformerEncoderLayer(4, 2, 6, dropout=0.0).to(np.float64)
        no_dropout.load_state_dict(layer.state_dict())
        np.testing.assert_allclose(no_dropout(x), y_eval)
    nn.manual_seed(11)
    layer(x)
    dx = layer.backward(d_out)

    def loss():
        nn.manual_seed(11)
        with nn.no_grad():
            return float(np.sum(layer(x) * d_out))
    _assert_fd(loss, {"x": x}, {"x": dx})


def _bad_encoder_calls():
    layer = nn.TransformerEncoderLayer(4, 2, 8)
    x = np.zeros((3, 2, 4), np.float32)
    return [
        (lambda: nn.TransformerEncoderLayer(5, 2), ValueError,
         r"embed_dim=5, num_heads=2\): embed_dim must be divisible"),
        (lambda: nn.TransformerEncoderLayer(4, 2, activation="tanh"), ValueError, "activation should be relu/gelu"),
        (lambda: nn.TransformerEncoderLayer(4, 2, activation=np.tanh), TypeError, "a plain function has no backward"),
        (lambda: layer(x[..., :3]), ValueError, r"TransformerEncoderLayer\(d_model=4, nhead=2\): expected src "
                                                r"\(S, N, 4\).*got \(3, 2, 3\)"),
        (lambda: layer(x, src_mask=np.zeros((3, 2), bool)), ValueError, r"attn_mask of shape .* got \(3, 2\)"),
        (lambda: layer(x, src_key_padding_mask=np.zeros((3, 2), bool)), ValueError, r"key_padding_mask .*\(3, 2\)"),
        (lambda: layer(x, is_causal=True), ValueError, "Need attn_mask"),
        (lambda: nn.TransformerEncoder(lambda v: v, 2), TypeError, "encoder_layer must be a Module"),
    ]


@pytest.mark.parametrize("index", range(len(_bad_encoder_calls())))
def test_encoder_bad_inputs_are_named(index):
    call, error, message = _bad_encoder_calls()[index]
    with pytest.raises(error, match=message):
        call()
