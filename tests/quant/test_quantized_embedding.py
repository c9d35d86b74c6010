"""Weight-only int8 Embedding (float_qparams_weight_only_qconfig) vs torch.ao.nn.quantized.Embedding, bit for bit."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress import nn
from minicompress import quant as Q

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def both(torch, w):
    import torch.ao.quantization as tq
    ours = nn.Sequential(nn.Embedding(*w.shape))
    ours[0].weight.data[...] = w
    theirs = torch.nn.Sequential(torch.nn.Embedding(*w.shape))
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    ours.qconfig, theirs.qconfig = Q.float_qparams_weight_only_qconfig, tq.float_qparams_weight_only_qconfig
    return Q.convert(Q.prepare(ours.eval())), tq.convert(tq.prepare(theirs.eval()))


@settings(max_examples=40)
@given(st.integers(1, 30), st.integers(1, 40), st.integers(0, 2 ** 32 - 1), st.booleans())
def test_embedding_codes_qparams_and_lookups_match_torch(torch, rows, dim, seed, dyadic):
    rng = np.random.default_rng(seed)
    w = (rng.integers(-8, 9, (rows, dim)) / 8).astype(np.float32) if dyadic else \
        (rng.normal(size=(rows, dim)) * rng.uniform(0.01, 3)).astype(np.float32)
    qm, tqm = both(torch, w)
    assert isinstance(qm[0], Q.QuantizedEmbedding)
    tw = tqm[0]._packed_params._weight()
    np.testing.assert_array_equal(qm[0].weight, tw.int_repr().numpy())
    np.testing.assert_array_equal(qm[0].weight_scale, tw.q_per_channel_scales().numpy().astype(np.float32))
    np.testing.assert_array_equal(qm[0].weight_zero_point, tw.q_per_channel_zero_points().numpy().astype(np.float32))
    idx = rng.integers(0, rows, (3, 5))
    y, ty = qm(idx), tqm(torch.from_numpy(idx)).numpy()
    np.testing.assert_array_equal(y.view(np.int32), ty.view(np.int32))      # fma(s, q, -z*s): bit for bit


def test_embedding_needs_the_float_qparams_qconfig():
    model = nn.Sequential(nn.Embedding(4, 3))
    model.qconfig = Q.default_qconfig
    prepared = Q.prepare(model.eval())
    prepared(np.array([0, 1]))
    with pytest.raises(ValueError, match="float_qparams_weight_only_qconfig"):
        Q.convert(prepared)
    model.qconfig = Q.float_qparams_weight_only_qconfig
    qm = Q.convert(Q.prepare(model))
    with pytest.raises(IndexError, match=r"indices must be in \[0, 4\)"):
        qm(np.array([4]))
