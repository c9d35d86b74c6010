"""Attention: scaled dot-product attention, MultiheadAttention, TransformerEncoderLayer / TransformerEncoder.
PyTorch as the oracle for outputs, attention weights, d inputs and every parameter gradient; float64 finite
differences for every backward; PyTorch's state-dict keys; errors naming the layer and the shapes."""
import numpy as np
import pytest
from gradcheck import numerical_grad, rel_error
from hypothesis import given, strategies as st
from oracle import assert_close

from minicompress.nn.functional.attention import (scaled_dot_product_attention, scaled_dot_product_attention_backward,
                                                  scaled_dot_product_attention_forward)

seeds = st.integers(0, 2**32 - 1)


def _normal(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def _assert_fd(loss, arrays: dict, analytic: dict, tol=1e-6) -> None:
    """Each analytic gradient against centred differences of ``loss()`` in the array it names (perturbed in place)."""
    errors = {name: rel_error(analytic[name], numerical_grad(lambda _: loss(), x)) for name, x in arrays.items()}
    bad = {k: v for k, v in errors.items() if not v < tol}
    assert not bad, f"finite-difference relative errors above {tol}: {bad}"


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
    q, k, v = _normal(rng, lead + (L, E), dtype), _normal(rng, lead + (S, E), dtype), _normal(rng, lead + (S, Ev), dtype)
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
