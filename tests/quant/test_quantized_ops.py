"""Quantized elementwise ops, merges, activations and pooling vs PyTorch 2.13's fbgemm kernels, exactly.

Both libraries get the same integer codes and qparams; the codes out (``int_repr``) and the output
(scale, zero_point) must be equal. The strategies draw quint8 and qint8, dyadic scales (exact
products, so many half-way ties) and arbitrary ones, every zero point, shapes whose size leaves a
scalar tail behind PyTorch's 64-element vector body, and NCHW or channels-last layouts (PyTorch's
quantized conv returns channels-last tensors, which changes the code path of cat and pooling).
The torch fixture runs single-threaded (``conftest.py``), as the ops' docstrings require for > 32 768 elements.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress.quant import qactivations as QA
from minicompress.quant import qnorm, qops, qpool
from minicompress.quant.qtensor import QTensor

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
RANGES = {"quint8": (0, 255, np.uint8), "qint8": (-128, 127, np.int8)}


@st.composite
def scales(draw):
    if draw(st.booleans()):
        return float(2.0 ** draw(st.integers(-7, 2)) * draw(st.sampled_from([1, 0.75, 1.25, 1.5, 0.625])))
    return float(np.float32(draw(st.floats(1e-3, 2.0))))


@st.composite
def qtensors(draw, shape=None, dtype=None, channels_last=None):
    dtype = dtype or draw(st.sampled_from(["quint8", "qint8"]))
    lo, hi, store = RANGES[dtype]
    if shape is None:
        shape = tuple(draw(st.lists(st.integers(1, 7), min_size=4, max_size=4)))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    codes = np.random.default_rng(seed).integers(lo, hi + 1, shape).astype(store)
    cl = draw(st.booleans()) if channels_last is None else channels_last
    return QTensor(codes, draw(scales()), draw(st.integers(lo, hi)), None, dtype, channels_last=cl and len(shape) == 4)


@st.composite
def pairs(draw):
    a = draw(qtensors())
    b = draw(qtensors(shape=a.shape, dtype=a.dtype, channels_last=draw(st.sampled_from([a.channels_last, None]))))
    lo, hi, _ = RANGES[a.dtype]
    return a, b, draw(scales()), draw(st.integers(lo, hi))


def to_torch(torch, q):
    t = torch._make_per_tensor_quantized_tensor(torch.from_numpy(q.int_repr.copy()), q.scale, q.zero_point)
    return t.contiguous(memory_format=torch.channels_last) if q.channels_last else t


def assert_same(ours, theirs):
    np.testing.assert_array_equal(ours.int_repr, theirs.int_repr().numpy())
    assert (ours.scale, ours.zero_point) == (theirs.q_scale(), theirs.q_zero_point())
    assert ours.int_repr.dtype == theirs.int_repr().numpy().dtype


@settings(max_examples=60)
@given(pairs(), st.sampled_from(["add", "add_relu", "mul", "mul_relu"]))
def test_binary_ops_match_torch(torch, case, op):
    a, b, scale, zp = case
    ours = (qops.mul if op.startswith("mul") else qops.add)(a, b, scale, zp, relu=op.endswith("relu"))
    assert_same(ours, getattr(torch.ops.quantized, op)(to_torch(torch, a), to_torch(torch, b), scale, zp))


@settings(max_examples=60)
@given(qtensors(), st.one_of(st.floats(-300, 300).filter(lambda c: c == 0 or abs(c) > 1e-6),
                             st.sampled_from([0.0, -1.0, 1e-5, 2.5])), st.booleans())
def test_scalar_ops_match_torch_qparam_rules(torch, x, c, relu):
    """(Scalars below ~1e-30 would give a scale that is 0 in float32: QTensor rejects it, PyTorch keeps it.)"""
    t = to_torch(torch, x)
    assert_same(qops.add_scalar(x, c, relu), (torch.ops.quantized.add_scalar_relu if relu else
                                              torch.ops.quantized.add_scalar)(t, c))
    assert_same(qops.mul_scalar(x, c, relu), (torch.ops.quantized.mul_scalar_relu if relu else
                                              torch.ops.quantized.mul_scalar)(t, c))


@settings(max_examples=60)
@given(pairs(), st.integers(0, 3), st.booleans())
def test_cat_requantizes_to_output_qparams(torch, case, dim, same_qparams):
    a, b, scale, zp = case
    if same_qparams:
        b = QTensor(b.int_repr, scale, zp, None, b.dtype, channels_last=b.channels_last)
    ours = qops.cat([a, b], dim, scale, zp)
    assert_same(ours, torch.ops.quantized.cat([to_torch(torch, a), to_torch(torch, b)], dim=dim,
                                               scale=scale, zero_point=zp))


@settings(max_examples=60)
@given(pairs(), st.floats(0.0, 3.0), st.floats(-4, 4), st.floats(0, 4))
def test_activations_match_torch(torch, case, slope, lo, width):
    x, _, scale, zp = case
    t = to_torch(torch, x)
    assert_same(QA.hardswish(x, scale, zp), torch.ops.quantized.hardswish(t, scale, zp))
    assert_same(QA.leaky_relu(x, slope, scale, zp), torch.ops.quantized.leaky_relu(t, slope, False, scale, zp))
    assert_same(QA.sigmoid(x), torch.sigmoid(t))
    assert_same(QA.relu6(x), torch.ops.quantized.relu6(t))
    assert_same(QA.clamp(x, lo, lo + width), torch.clamp(t, lo, lo + width))
    assert_same(QA.hardtanh(x, lo, lo + width + 1e-3), torch.nn.functional.hardtanh(t, lo, lo + width + 1e-3))


def test_sigmoid_every_code_over_many_scales(torch):
    """All 256 codes, 400 input qparams: the float32 exp here vs PyTorch's (Sleef in the vector body)."""
    rng = np.random.default_rng(0)
    for dtype in ("quint8", "qint8"):
        lo, hi, store = RANGES[dtype]
        codes = np.tile(np.arange(lo, hi + 1), 2).astype(store)        # 512: 448 body + 64 ... tail below
        codes = np.concatenate([codes, codes[:37]])
        for _ in range(200):
            x = QTensor(codes, float(rng.uniform(1e-3, 0.2)), int(rng.integers(lo, hi + 1)), None, dtype)
            assert_same(QA.sigmoid(x), torch.sigmoid(to_torch(torch, x)))


@settings(max_examples=60)
@given(qtensors(), st.sampled_from([1, 2, 3, (1, 1), (2, 3), (5, 4)]))
def test_adaptive_avg_pool2d_both_layouts(torch, x, size):
    assert_same(qpool.adaptive_avg_pool2d(x, size), torch.nn.functional.adaptive_avg_pool2d(to_torch(torch, x), size))


@settings(max_examples=60)
@given(pairs(), st.booleans(), st.integers(0, 2 ** 32 - 1))
def test_prelu_matches_torch(torch, case, per_channel, seed):
    x, _, scale, zp = case
    lo, hi, store = RANGES[x.dtype]
    n = x.shape[1] if per_channel else 1
    rng = np.random.default_rng(seed)
    w = QTensor(rng.integers(lo, hi + 1, n).astype(store), float(rng.uniform(0.001, 0.1)), int(rng.integers(lo, hi + 1)),
                None, x.dtype)
    assert_same(QA.prelu(x, w, scale, zp), torch.ops.quantized.prelu(to_torch(torch, x), to_torch(torch, w), scale, zp))


@settings(max_examples=60)
@given(qtensors(), st.sampled_from([None, 3, (2, 3), (1, 2, 3), -1]), st.booleans())
def test_mean_over_innermost_dims_exact(torch, x, dim, keepdim):
    t = to_torch(torch, x)
    theirs = torch.mean(t) if dim is None else torch.mean(t, dim, keepdim)
    ours = qpool.mean(x, dim, keepdim and dim is not None)
    if x.channels_last and x.shape[1] > 1 and x.shape[2] * x.shape[3] > 1:      # float path: within one code
        assert np.abs(ours.int_repr.astype(int) - theirs.int_repr().numpy().astype(int)).max() <= 1
        assert (ours.scale, ours.zero_point) == (theirs.q_scale(), theirs.q_zero_point())
    else:
        assert_same(ours, theirs)


@settings(max_examples=60)
@given(pairs(), st.integers(1, 3), st.booleans(), st.integers(0, 2 ** 32 - 1))
def test_layer_norm_matches_torch(torch, case, k, affine, seed):
    x, _, scale, zp = case
    shape = x.shape[4 - k:]
    rng = np.random.default_rng(seed)
    w, b = (rng.normal(size=shape).astype(np.float32) for _ in range(2)) if affine else (None, None)
    tw, tb = (None, None) if w is None else (torch.from_numpy(w), torch.from_numpy(b))
    assert_same(qnorm.layer_norm(x, shape, w, b, 1e-5, scale, zp),
                torch.ops.quantized.layer_norm(to_torch(torch, x), list(shape), tw, tb, 1e-5, scale, zp))


def test_layer_norm_ties_in_body_and_tail(torch):
    """Rows z +- a: the std is exact (eps = 0), and beta = odd multiples of S/2 puts every y on a half-way point."""
    n, z, a, scale = 40, 100, 8, 0.125                              # 32 body + 8 tail per row
    codes = np.where(np.arange(n) % 2 == 0, z + a, z - a).astype(np.uint8)[None].repeat(3, 0)
    x = QTensor(codes, 0.25, z, None, "quint8")
    rng = np.random.default_rng(0)
    w = (rng.integers(-8, 9, n) / 8).astype(np.float32)
    b = (rng.integers(-16, 17, n) / 16 + scale / 2).astype(np.float32)
    ours = qnorm.layer_norm(x, (n,), w, b, 0.0, scale, 7)
    assert_same(ours, torch.ops.quantized.layer_norm(to_torch(torch, x), [n], torch.from_numpy(w), torch.from_numpy(b),
                                                     0.0, scale, 7))


@settings(max_examples=30)
@given(qtensors(shape=(1, 5, 6)), st.sampled_from([1, (2, 3)]))
def test_adaptive_avg_pool2d_unbatched_input(torch, x, size):
    """A (C, H, W) input is never channels-last in PyTorch, even with C == 1."""
    assert_same(qpool.adaptive_avg_pool2d(x, size), torch.nn.functional.adaptive_avg_pool2d(to_torch(torch, x), size))


def test_ties_split_between_vector_body_and_scalar_tail(torch):
    """Half-way sums: the body adds the zero point after rounding, the tail before -- both as PyTorch."""
    n = 100                                                   # 64 body + 36 tail
    a = QTensor(np.full(n, 131, np.uint8), 0.5, 128, None, "quint8")        # 1.5 each
    b = QTensor(np.full(n, 128, np.uint8), 0.5, 128, None, "quint8")        # 0
    ours = qops.add(a, b, 1.0, 3)                           # 1.5: body rint(1.5) + 3 = 5, tail rint(4.5) = 4
    assert ours.int_repr[0] == 5 and ours.int_repr[-1] == 4
    assert_same(ours, torch.ops.quantized.add(to_torch(torch, a), to_torch(torch, b), 1.0, 3))
    x = QTensor(np.arange(100, dtype=np.uint8), 0.25, 3, None, "quint8")
    assert_same(QA.hardswish(x, 0.5, 7), torch.ops.quantized.hardswish(to_torch(torch, x), 0.5, 7))


def test_add_of_mixed_layouts_is_all_scalar_path(torch):
    """An NHWC conv output plus an NCHW tensor: no vector body at all -- ties round with the zero point first."""
    shape = (2, 3, 5, 7)                                                     # 210 codes
    a = QTensor(np.full(shape, 131, np.uint8), 0.5, 128, None, "quint8", channels_last=True)     # 1.5
    b = QTensor(np.full(shape, 128, np.uint8), 0.5, 128, None, "quint8")                         # 0
    ours = qops.add(a, b, 1.0, 3)
    assert (ours.int_repr == 4).all() and ours.channels_last                  # rint(1.5 + 3) = 4 everywhere
    assert_same(ours, torch.ops.quantized.add(to_torch(torch, a), to_torch(torch, b), 1.0, 3))
    same = qops.add(a, QTensor(b.int_repr, 0.5, 128, None, "quint8", channels_last=True), 1.0, 3)
    assert (same.int_repr == 5).sum() == 192                                 # 3 * 64 body codes: rint(1.5) + 3


def test_saturation_and_qparam_edge_cases(torch):
    x = QTensor(np.array([0, 1, 127, 128, 254, 255] * 20, np.uint8), 0.1, 250, None, "quint8")
    t = to_torch(torch, x)
    for c in (-1000.0, 1000.0, 0.05, -0.05, 0.15):                   # add_scalar: z - c_q below / above / inside
        assert_same(qops.add_scalar(x, c), torch.ops.quantized.add_scalar(t, c))
    for c in (-3.0, 0.0, 2.0):                                       # mul_scalar: the code order flips for c < 0
        assert_same(qops.mul_scalar(x, c), torch.ops.quantized.mul_scalar(t, c))
    s = QTensor(np.array([-128, -1, 0, 127] * 20, np.int8), 1.0, -128, None, "qint8")
    ts = to_torch(torch, s)
    assert_same(qops.add(s, s, 0.01, 127), torch.ops.quantized.add(ts, ts, 0.01, 127))      # saturates at 127
    assert_same(qops.mul(s, s, 1e-3, -128), torch.ops.quantized.mul(ts, ts, 1e-3, -128))


def test_bad_inputs_name_the_op_and_shapes():
    a = QTensor(np.zeros((2, 3), np.uint8), 1.0, 0, None, "quint8")
    b = QTensor(np.zeros((3, 2), np.uint8), 1.0, 0, None, "quint8")
    with pytest.raises(ValueError, match=r"quantized add: operands must have the same shape, got \(2, 3\) and \(3, 2\)"):
        qops.add(a, b, 1.0, 0)
    with pytest.raises(TypeError, match="quantized mul: expected a QTensor, got ndarray"):
        qops.mul(a, np.zeros((2, 3), np.float32), 1.0, 0)
    with pytest.raises(TypeError, match="same dtype"):
        qops.add(a, QTensor(np.zeros((2, 3), np.int8), 1.0, 0, None, "qint8"), 1.0, 0)
    with pytest.raises(ValueError, match="cannot concatenate"):
        qops.cat([a, b], 0)
    with pytest.raises(TypeError, match=r"'\+' on a QTensor and a QTensor: .*nn.Add"):
        a + a
    with pytest.raises(TypeError, match=r"'\*' on a QTensor and a ndarray"):
        np.ones((2, 3)) * a
