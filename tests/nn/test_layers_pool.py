import numpy as np
import pytest
from gradcheck import check_module_grads
from hypothesis import assume, given, strategies as st
from oracle import compare_with_torch

from minicompress import nn
from minicompress.nn.functional import pool as F

seeds = st.integers(0, 2**32 - 1)


@st.composite
def pool_cases(draw, nd: int, kind: str, small: bool = False):
    """kwargs, input shape (batched or not), seed; padding <= kernel // 2 and a non-empty output."""
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    kwargs = dict(kernel_size=kernel, padding=tuple(draw(st.integers(0, k // 2)) for k in kernel),
                  ceil_mode=draw(st.booleans()))
    if draw(st.booleans()):
        kwargs["stride"] = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = (1,) * nd
    if kind == "max":
        dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
        kwargs["dilation"] = dilation
    else:
        kwargs["count_include_pad"] = draw(st.booleans())
        if nd == 2 and draw(st.integers(0, 4)) == 0:
            kwargs["divisor_override"] = draw(st.integers(1, 5))
    if nd == 2 and draw(st.booleans()):  # ints, as PyTorch users write them
        kwargs = {k: (v[0] if isinstance(v, tuple) and len(set(v)) == 1 else v) for k, v in kwargs.items()}
    spatial = [draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), d * (k - 1) + (4 if small else 8)))
               for k, d, p in zip(kernel, dilation, [p for p in np.broadcast_to(kwargs["padding"], (nd,))])]
    lead = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    if draw(st.integers(0, 4)) == 0:
        lead = lead[1:]  # unbatched (C, *spatial)
    return kwargs, lead + tuple(spatial), draw(seeds)


def _as_1d(kwargs, shape):
    """The last spatial axis of a 2-D case as a 1-D case."""
    kwargs = {k: (v[-1] if isinstance(v, tuple) else v) for k, v in kwargs.items() if k != "divisor_override"}
    return kwargs, shape[:-2] + shape[-1:]


def _data(shape, seed, ties):
    rng = np.random.default_rng(seed)
    if ties:  # few distinct values: many equal maxima inside a window
        return rng.integers(-2, 3, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def _windows_see_input(kwargs, shape, nd):
    """False if some (dilated) max-pool window lies entirely in the padding: both libraries output -inf
    there, and PyTorch then routes the gradient to an element outside the window (its default index)."""
    args = [np.broadcast_to(kwargs.get(k, d), (nd,)) for k, d in
            (("kernel_size", 1), ("stride", kwargs["kernel_size"]), ("padding", 0), ("dilation", 1))]
    for axis, (k, s, p, d) in enumerate(zip(*args)):
        size = shape[len(shape) - nd + axis]
        out = F.pool_output_size(size, k, s, p, d, kwargs["ceil_mode"])
        for i in range(out):
            if not any(0 <= i * s + q * d - p < size for q in range(k)):
                return False
    return True


@pytest.mark.parametrize("nd", [1, 2])
@given(case=pool_cases(nd=2, kind="max"), ties=st.booleans())
def test_maxpool_matches_torch_including_ties(torch, nd, case, ties):
    kwargs, shape, seed = case if nd == 2 else (*_as_1d(*case[:2]), case[2])
    assume(_windows_see_input(kwargs, shape, nd))
    name = f"MaxPool{nd}d"
    compare_with_torch(torch, getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs), _data(shape, seed, ties))


@pytest.mark.parametrize("nd", [1, 2])
@given(case=pool_cases(nd=2, kind="avg"))
def test_avgpool_matches_torch(torch, nd, case):
    kwargs, shape, seed = case if nd == 2 else (*_as_1d(*case[:2]), case[2])
    name = f"AvgPool{nd}d"
    compare_with_torch(torch, getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs), _data(shape, seed, False))


sizes = st.one_of(st.integers(1, 5), st.tuples(st.one_of(st.none(), st.integers(1, 5)), st.integers(1, 5)))


@given(output_size=sizes, hw=st.tuples(st.integers(1, 9), st.integers(1, 9)), seed=seeds)
def test_adaptive_avgpool_matches_torch(torch, output_size, hw, seed):
    x = _data((2, 3) + hw, seed, False)
    compare_with_torch(torch, nn.AdaptiveAvgPool2d(output_size), torch.nn.AdaptiveAvgPool2d(output_size), x)


def _distinct(shape, seed):
    """float64 values at least 0.1 apart: no ties, and an eps-perturbation never changes an arg-max."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(int(np.prod(shape))) * 0.1 - 1.0).reshape(shape)


@pytest.mark.parametrize("nd", [1, 2])
@given(case=pool_cases(nd=2, kind="max", small=True))
def test_maxpool_finite_differences(nd, case):
    kwargs, shape, seed = case if nd == 2 else (*_as_1d(*case[:2]), case[2])
    assume(_windows_see_input(kwargs, shape, nd))  # else outputs are -inf
    check_module_grads(getattr(nn, f"MaxPool{nd}d")(**kwargs), _distinct(shape, seed))


@pytest.mark.parametrize("nd", [1, 2])
@given(case=pool_cases(nd=2, kind="avg", small=True))
def test_avgpool_finite_differences(nd, case):
    kwargs, shape, seed = case if nd == 2 else (*_as_1d(*case[:2]), case[2])
    check_module_grads(getattr(nn, f"AvgPool{nd}d")(**kwargs), _distinct(shape, seed))


@given(output_size=sizes, hw=st.tuples(st.integers(1, 6), st.integers(1, 6)), seed=seeds)
def test_adaptive_avgpool_finite_differences(output_size, hw, seed):
    check_module_grads(nn.AdaptiveAvgPool2d(output_size), np.random.default_rng(seed).standard_normal((1, 2) + hw))


def test_maxpool_tie_gradient_goes_to_first_maximum():
    x = np.array([[[[1.0, 1.0], [1.0, 1.0]]]], np.float32)
    pool = nn.MaxPool2d(2)
    pool(x)
    np.testing.assert_array_equal(pool.backward(np.ones((1, 1, 1, 1), np.float32)), [[[[1, 0], [0, 0]]]])


def test_maxpool_propagates_nan(torch):
    x = np.array([[[[1.0, np.nan, 3.0, 2.0]]]], np.float32)
    ours = nn.MaxPool2d((1, 2))(x)
    theirs = torch.nn.MaxPool2d((1, 2))(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(ours, theirs)


def test_pool_reprs_match_torch(torch):
    for name, args, kwargs in [("MaxPool2d", (2,), {}), ("MaxPool2d", ((2, 3),), dict(stride=1, padding=1)),
                               ("MaxPool1d", (3,), dict(dilation=2, ceil_mode=True)), ("AvgPool2d", (3,), {}),
                               ("AvgPool1d", (4,), dict(stride=2, padding=1)), ("AdaptiveAvgPool2d", ((None, 7),), {}),
                               ("AdaptiveAvgPool2d", (1,), {})]:
        assert repr(getattr(nn, name)(*args, **kwargs)) == repr(getattr(torch.nn, name)(*args, **kwargs))


def test_pool_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match=r"MaxPool2d\(kernel_size=3.*pad should be at most half of kernel size"):
        nn.MaxPool2d(3, padding=2)
    with pytest.raises(ValueError, match=r"AvgPool1d\(.*pad should be at most half"):
        nn.AvgPool1d(2, padding=2)
    with pytest.raises(NotImplementedError, match="return_indices"):
        nn.MaxPool2d(2, return_indices=True)
    with pytest.raises(ValueError, match=r"^MaxPool2d\(kernel_size=2.*\): expected input \(N, C, H, W\) or "
                                         r"\(C, H, W\), got \(5,\)$"):
        nn.MaxPool2d(2)(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"MaxPool2d\(kernel_size=3.*input \(1, 1, 2, 2\) is too small"):
        nn.MaxPool2d(3)(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"AvgPool1d\(.*expected input \(N, C, L\) or \(C, L\), got \(1, 1, 2, 2\)"):
        nn.AvgPool1d(2)(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(TypeError, match=r"AdaptiveAvgPool2d\(output_size=2\): expected a floating-point input"):
        nn.AdaptiveAvgPool2d(2)(np.zeros((1, 1, 2, 2), np.int32))
    with pytest.raises(ValueError, match="output_size must be"):
        nn.AdaptiveAvgPool2d(0)
