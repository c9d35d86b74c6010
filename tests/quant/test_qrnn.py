"""Dynamic quantization of LSTM, GRU and the cells (int8 and float16) against torch.ao.nn.quantized.dynamic."""
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicompress import io, nn, quant

TOL = 1e-6          # the integer parts are exact; what is left is float32 gate arithmetic (outputs in [-1, 1])


def _twin(torch, mode, **kw):
    """A torch layer and ours with the same weights."""
    t = getattr(torch.nn, mode)(**kw)
    ours = getattr(nn, mode)(**kw)
    ours.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    return t, ours


def _torch_dynamic(torch, layer, dtype, per_channel=False):
    qc = torch.ao.quantization
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if per_channel:
            spec = {type(layer): qc.per_channel_dynamic_qconfig}
            return qc.quantize_dynamic(torch.nn.Sequential(layer), spec)[0]
        return qc.quantize_dynamic(torch.nn.Sequential(layer), {type(layer)}, dtype=dtype)[0]


def _ours_dynamic(layer, dtype, per_channel=False):
    if per_channel:
        return quant.quantize_dynamic(nn.Sequential(layer), {type(layer): quant.per_channel_dynamic_qconfig})[0]
    return quant.quantize_dynamic(nn.Sequential(layer), {type(layer)}, dtype=dtype)[0]


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=TOL)


@given(mode=st.sampled_from(["LSTM", "GRU"]), layers=st.integers(1, 2), bidirectional=st.booleans(),
       batch_first=st.booleans(), T=st.integers(1, 6), N=st.integers(1, 4), I=st.integers(1, 7), H=st.integers(1, 6),
       weights=st.sampled_from(["qint8", "per_channel", "float16"]), with_hx=st.booleans(), with_lengths=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_dynamic_sequence_layers_match_torch(torch, mode, layers, bidirectional, batch_first, T, N, I, H, weights,
                                             with_hx, with_lengths, seed):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t, ours = _twin(torch, mode, input_size=I, hidden_size=H, num_layers=layers, bidirectional=bidirectional,
                    batch_first=batch_first)
    dtype = torch.float16 if weights == "float16" else torch.qint8
    tq = _torch_dynamic(torch, t, dtype, weights == "per_channel")
    oq = _ours_dynamic(ours, "float16" if weights == "float16" else "qint8", weights == "per_channel")
    x = (rng.standard_normal((N, T, I) if batch_first else (T, N, I)) * 2).astype(np.float32)
    D = 2 if bidirectional else 1
    hx = None
    if with_hx:
        hx = tuple(rng.standard_normal((layers * D, N, H)).astype(np.float32) for _ in range(2 if mode == "LSTM" else 1))
    t_hx = None if hx is None else tuple(torch.from_numpy(h) for h in hx)
    t_hx = t_hx if t_hx is None or mode == "LSTM" else t_hx[0]
    o_hx = hx if hx is None or mode == "LSTM" else hx[0]
    lengths = rng.integers(1, T + 1, N) if with_lengths else None
    if lengths is None:
        t_out, t_h = tq(torch.from_numpy(x), t_hx)
    else:
        rnn = torch.nn.utils.rnn
        packed = rnn.pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths), batch_first=batch_first,
                                          enforce_sorted=False)
        t_out, t_h = tq(packed, t_hx)
        t_out = rnn.pad_packed_sequence(t_out, batch_first=batch_first, total_length=T)[0]
    o_out, o_h = oq(x, o_hx, lengths)
    _close(o_out, t_out.detach().numpy())
    for a, b in zip(o_h if mode == "LSTM" else (o_h,), t_h if mode == "LSTM" else (t_h,)):
        _close(a, b.detach().numpy())


@given(cell=st.sampled_from(["LSTMCell", "GRUCell", "RNNCell-tanh", "RNNCell-relu"]), N=st.integers(1, 5),
       I=st.integers(1, 8), H=st.integers(1, 7), dtype=st.sampled_from(["qint8", "float16"]), with_hx=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_dynamic_cells_match_torch(torch, cell, N, I, H, dtype, with_hx, seed):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    name, _, nonlinearity = cell.partition("-")
    kw = {"nonlinearity": nonlinearity} if nonlinearity else {}
    t, ours = _twin(torch, name, input_size=I, hidden_size=H, **kw)
    tq = _torch_dynamic(torch, t, torch.float16 if dtype == "float16" else torch.qint8)
    oq = _ours_dynamic(ours, dtype)
    x = (rng.standard_normal((N, I)) * 3).astype(np.float32)
    states = [rng.standard_normal((N, H)).astype(np.float32) for _ in range(2 if name == "LSTMCell" else 1)]
    if not with_hx:
        t_out, o_out = tq(torch.from_numpy(x)), oq(x)
    elif name == "LSTMCell":
        t_out, o_out = tq(torch.from_numpy(x), tuple(map(torch.from_numpy, states))), oq(x, tuple(states))
    else:
        t_out, o_out = tq(torch.from_numpy(x), torch.from_numpy(states[0])), oq(x, states[0])
    for a, b in zip(o_out if name == "LSTMCell" else (o_out,), t_out if name == "LSTMCell" else (t_out,)):
        _close(a, b.detach().numpy())


def test_tolerance_separates_quantized_from_float(torch):
    """The comparison above can fail: a float LSTM, or one quantizing its input per step instead of once per
    sequence (eq. 1), is far outside TOL of torch's dynamic LSTM on the same weights."""
    torch.manual_seed(0)
    t, ours = _twin(torch, "LSTM", input_size=6, hidden_size=5)
    x = np.random.default_rng(0).standard_normal((8, 3, 6)).astype(np.float32) * np.linspace(0.2, 3, 8)[:, None, None]
    x = x.astype(np.float32)
    t_out = _torch_dynamic(torch, t, torch.qint8)(torch.from_numpy(x))[0].detach().numpy()
    oq = _ours_dynamic(ours, "qint8")
    assert np.abs(oq(x)[0] - t_out).max() <= TOL
    assert np.abs(ours(x)[0] - t_out).max() > 100 * TOL
    state, per_step = None, []
    for step in range(x.shape[0]):
        out, state = oq(x[step:step + 1], state)
        per_step.append(out)
    assert np.abs(np.concatenate(per_step) - t_out).max() > 100 * TOL


def test_float16_linear_weights_equal_torch_and_saturate_with_a_warning(torch):
    lin = torch.nn.Linear(9, 4)
    with torch.no_grad():
        lin.weight[0, 0] = 1e6
        lin.weight[1, 1] = 1e-7                       # a float16 subnormal
    ours = nn.Linear(9, 4)
    ours.load_state_dict({k: v.detach().numpy() for k, v in lin.state_dict().items()})
    t16 = _torch_dynamic(torch, lin, torch.float16)
    with pytest.warns(RuntimeWarning, match="saturated"):
        o16 = quant.quantize_dynamic(nn.Sequential(ours), dtype="float16")[0]
    assert type(o16).__name__ == "DynamicFloat16Linear" and o16.weight.dtype == np.float16
    np.testing.assert_array_equal(o16.weight.astype(np.float32), t16._weight_bias()[0].detach().numpy())
    x = np.random.default_rng(1).standard_normal((5, 9)).astype(np.float32)
    np.testing.assert_allclose(o16(x), t16(torch.from_numpy(x)).detach().numpy(), rtol=1e-6, atol=1e-3)


def test_default_qconfig_spec_is_pytorchs():
    model = nn.Sequential(nn.Embedding(10, 4), nn.LSTM(4, 3), )
    cells = nn.Sequential(nn.Linear(4, 4), nn.GRUCell(4, 4), nn.LSTMCell(4, 4), nn.RNNCell(4, 4), nn.GRU(4, 4))
    q = quant.quantize_dynamic(cells)
    assert [type(m).__name__ for m in q] == ["DynamicQuantizedLinear", "DynamicQuantizedGRUCell",
                                             "DynamicQuantizedLSTMCell", "DynamicQuantizedRNNCell",
                                             "DynamicQuantizedGRU"]
    q = quant.quantize_dynamic(model)
    assert [type(m).__name__ for m in q] == ["Embedding", "DynamicQuantizedLSTM"]
    q = quant.quantize_dynamic(model, dtype="quint8")
    assert [type(m).__name__ for m in q] == ["QuantizedEmbedding", "LSTM"]
    with pytest.raises(ValueError, match="quint4x2"):
        quant.quantize_dynamic(model, dtype="quint4x2")


def test_refusals_name_the_layer():
    with pytest.raises(ValueError, match="bias=True"):
        quant.quantize_dynamic(nn.Sequential(nn.GRU(3, 4, bias=False)))
    with pytest.raises(ValueError, match="proj_size=2"):
        quant.quantize_dynamic(nn.Sequential(nn.LSTM(3, 4, proj_size=2)))
    q = quant.quantize_dynamic(nn.Sequential(nn.GRUCell(3, 4)))[0]
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        q(np.zeros(3, np.float32))
    with pytest.raises(NotImplementedError, match="inference-only"):
        q.backward(np.zeros((1, 4), np.float32))


@pytest.mark.parametrize("dtype", ["qint8", "float16"])
def test_model_files_store_dynamic_recurrent_layers(tmp_path, dtype):
    x = np.random.default_rng(2).standard_normal((5, 2, 3)).astype(np.float32)
    for layer in (nn.LSTM(3, 4, num_layers=2, bidirectional=True), nn.GRU(3, 4, batch_first=True)):
        q = quant.quantize_dynamic(nn.Sequential(layer), dtype=dtype)
        io.save(q, tmp_path / "m.npz")
        back = io.load(tmp_path / "m.npz")
        a, b = q[0](x)[0], back[0](x)[0]
        np.testing.assert_array_equal(a, b)
    cell = quant.quantize_dynamic(nn.Sequential(nn.RNNCell(3, 4, nonlinearity="relu")), dtype=dtype)
    io.save(cell, tmp_path / "c.npz")
    back = io.load(tmp_path / "c.npz")
    assert back[0].nonlinearity == "relu"
    np.testing.assert_array_equal(cell[0](x[0]), back[0](x[0]))
