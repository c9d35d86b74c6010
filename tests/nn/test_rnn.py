"""RNN, LSTM, GRU and their cells against PyTorch (outputs, final states, d input, d initial states, every
parameter gradient) and float64 finite differences; padded batches through ``lengths=`` against
``pack_padded_sequence``; state-dict keys, errors, pruning, repeated calls and model files."""
import importlib
import warnings

import numpy as np
import pytest
from gradcheck import numerical_grad, rel_error
from hypothesis import given, strategies as st
from oracle import assert_close, to_torch_state

from minicompress import nn, prune

seeds = st.integers(0, 2**32 - 1)
MODES = {"RNN": {}, "RNN_RELU": {"nonlinearity": "relu"}, "LSTM": {}, "GRU": {}}


@st.composite
def recurrent_cases(draw, modes=tuple(MODES)):
    """(class name, constructor kwargs, input shape, with h0, lengths or None, seed)."""
    mode = draw(st.sampled_from(modes))
    hidden = draw(st.integers(1, 4))
    kwargs = dict(MODES[mode], input_size=draw(st.integers(1, 4)), hidden_size=hidden,
                  num_layers=draw(st.integers(1, 2)), bias=draw(st.booleans()), batch_first=draw(st.booleans()),
                  bidirectional=draw(st.booleans()))
    if mode == "LSTM" and hidden > 1 and draw(st.booleans()):
        kwargs["proj_size"] = draw(st.integers(1, hidden - 1))
    T, N = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    unbatched = draw(st.integers(0, 5)) == 0
    shape = (T, kwargs["input_size"]) if unbatched else \
        (N, T, kwargs["input_size"]) if kwargs["batch_first"] else (T, N, kwargs["input_size"])
    lengths = None
    if not unbatched and draw(st.booleans()):
        lengths = draw(st.lists(st.integers(1, T), min_size=N, max_size=N))
    return mode.split("_")[0], kwargs, shape, draw(st.booleans()), lengths, draw(seeds)


def _states(module, shape, rng, dtype=np.float32):
    """Random (h0,) or (h0, c0) of the shapes ``module`` expects for an input of ``shape``."""
    LD, batch = module.num_layers * module.num_directions, () if len(shape) == 2 else (shape[0 if module.batch_first
                                                                                               else 1],)
    sizes = [module.proj_size or module.hidden_size] + ([module.hidden_size] if module.mode == "LSTM" else [])
    return tuple(rng.standard_normal((LD, *batch, size)).astype(dtype) for size in sizes)


def _pack(hidden, mode):
    return (tuple(hidden) if mode == "LSTM" else hidden[0]) if hidden is not None else None


def _flat(hidden, mode):
    return hidden if mode == "LSTM" else (hidden,)


def run_torch(torch, theirs, x, hx, lengths, douts):
    """PyTorch's outputs and gradients; with lengths through pack_padded_sequence / pad_packed_sequence."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    xt = torch.tensor(x, requires_grad=True)
    hxt = None if hx is None else tuple(torch.tensor(h, requires_grad=True) for h in hx)
    inp = xt
    if lengths is not None:
        inp = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=theirs.batch_first, enforce_sorted=False)
    yt, hidden = theirs(inp, _pack(hxt, theirs.mode))
    if lengths is not None:
        yt, _ = pad_packed_sequence(yt, batch_first=theirs.batch_first, total_length=x.shape[theirs.batch_first])
    hidden = _flat(hidden, theirs.mode)
    loss = (yt * torch.from_numpy(douts[0])).sum()
    for h, d in zip(hidden, douts[1:]):
        loss = loss + (h * torch.from_numpy(d)).sum()
    loss.backward()
    return yt, hidden, xt, hxt


# Gradients are sums over time steps, batch and gates of O(1) terms (inputs, states and output gradients are
# standard normal), which can cancel to far below them: their absolute tolerance is 1e-5 * 0.1 (oracle.py's
# ``scale``), i.e. 1e-6 -- about 10 float32 roundings of one term.
GRAD_SCALE = 0.1


def compare(torch, ours, theirs, x, hx=None, lengths=None, seed=0, rtol=1e-5, atol=1e-5):
    """Our layer and PyTorch's on our weights: outputs, final states and every gradient."""
    theirs.load_state_dict(to_torch_state(torch, ours.state_dict()), strict=True)
    assert repr(ours) == repr(theirs)
    rng = np.random.default_rng(seed)
    y, hidden = ours(x, _pack(hx, ours.mode), lengths)
    hidden = _flat(hidden, ours.mode)
    douts = [rng.standard_normal(a.shape).astype(a.dtype) for a in (y, *hidden)]
    dx, dhx = ours.backward((douts[0], _pack(douts[1:], ours.mode)))
    yt, hidden_t, xt, hxt = run_torch(torch, theirs, x, hx, lengths, douts)
    assert_close(y, yt.detach().numpy(), "output", rtol, atol)
    for name, a, b in zip(("h_n", "c_n"), hidden, hidden_t):
        assert_close(a, b.detach().numpy(), name, rtol, atol)
    assert_close(dx, xt.grad.numpy(), "d input", rtol, atol, GRAD_SCALE)
    if hx is not None:
        for name, a, b in zip(("d h0", "d c0"), _flat(dhx, ours.mode), hxt):
            assert_close(a, b.grad.numpy(), name, rtol, atol, GRAD_SCALE)
    params = dict(theirs.named_parameters())
    assert [name for name, _ in ours.named_parameters()] == list(params)
    for name, p in ours.named_parameters():
        assert_close(p.grad, params[name].grad.numpy(), f"d {name}", rtol, atol, GRAD_SCALE)
    return y, hidden, dx


@given(recurrent_cases())
def test_layers_match_torch(torch, case):
    name, kwargs, shape, with_h0, lengths, seed = case
    rng = np.random.default_rng(seed)
    ours = getattr(nn, name)(rng=seed, **kwargs)
    x = rng.standard_normal(shape).astype(np.float32)
    hx = _states(ours, shape, rng) if with_h0 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # PyTorch: "LSTM with projections is not supported with oneDNN"
        compare(torch, ours, getattr(torch.nn, name)(**kwargs), x, hx, lengths, seed)


@pytest.mark.parametrize("name, kwargs", [("RNN", {"nonlinearity": "relu"}), ("LSTM", {}), ("LSTM", {"proj_size": 2}),
                                          ("GRU", {})])
@pytest.mark.parametrize("batch_first", [False, True])
def test_padded_batches_match_pack_padded_sequence(torch, name, kwargs, batch_first):
    """Unsorted lengths, one of them full, two layers, both directions, given initial states."""
    rng = np.random.default_rng(8)
    kwargs = dict(kwargs, num_layers=2, bidirectional=True, batch_first=batch_first)
    ours = getattr(nn, name)(3, 4, rng=8, **kwargs)
    x = rng.standard_normal((4, 5, 3) if batch_first else (5, 4, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compare(torch, ours, getattr(torch.nn, name)(3, 4, **kwargs), x, _states(ours, x.shape, rng), [2, 5, 1, 4])


@given(st.sampled_from(["RNNCell", "RNNCell_relu", "LSTMCell", "GRUCell"]), st.integers(1, 4), st.integers(1, 4),
       st.booleans(), st.sampled_from([None, 1, 3]), st.booleans(), seeds)
def test_cells_match_torch(torch, name, input_size, hidden_size, bias, batch, with_h, seed):
    name, _, relu = name.partition("_")
    kwargs = dict(input_size=input_size, hidden_size=hidden_size, bias=bias)
    kwargs.update({"nonlinearity": "relu"} if relu else {})
    rng = np.random.default_rng(seed)
    ours, theirs = getattr(nn, name)(rng=seed, **kwargs), getattr(torch.nn, name)(**kwargs)
    theirs.load_state_dict(to_torch_state(torch, ours.state_dict()), strict=True)
    assert repr(ours) == repr(theirs)
    lstm = name == "LSTMCell"
    x = rng.standard_normal((input_size,) if batch is None else (batch, input_size)).astype(np.float32)
    hshape = x.shape[:-1] + (hidden_size,)
    hx = tuple(rng.standard_normal(hshape).astype(np.float32) for _ in range(2 if lstm else 1)) if with_h else None
    out = _flat(ours(x, _pack(hx, "LSTM" if lstm else "")), "LSTM" if lstm else "")
    douts = [rng.standard_normal(o.shape).astype(np.float32) for o in out]
    dx, dh = ours.backward(_pack(douts, "LSTM" if lstm else ""))
    xt = torch.tensor(x, requires_grad=True)
    hxt = None if hx is None else tuple(torch.tensor(h, requires_grad=True) for h in hx)
    out_t = _flat(theirs(xt, _pack(hxt, "LSTM" if lstm else "")), "LSTM" if lstm else "")
    sum((o * torch.from_numpy(d)).sum() for o, d in zip(out_t, douts)).backward()
    for a, b in zip(out, out_t):
        assert_close(a, b.detach().numpy(), "output")
    assert_close(dx, xt.grad.numpy(), "d input", scale=GRAD_SCALE)
    if hx is not None:
        for a, b in zip(_flat(dh, "LSTM" if lstm else ""), hxt):
            assert_close(a, b.grad.numpy(), "d hx", scale=GRAD_SCALE)
    params = dict(theirs.named_parameters())
    assert [n for n, _ in ours.named_parameters()] == list(params)
    for n, p in ours.named_parameters():
        assert_close(p.grad, params[n].grad.numpy(), f"d {n}", scale=GRAD_SCALE)


# --------------------------------------------------------------------------- finite differences (float64)
def check_finite_differences(module, x, hx=None, lengths=None, seed=0, reseed=None, tol=1e-6):
    """d input, d initial states and d every parameter of a recurrent layer or cell against centred
    differences of L = sum(output * d output) + sum(state * d state). ``reseed``: re-seed the global
    generator before every forward (the same dropout masks each time)."""
    module.to(np.float64)
    cell = isinstance(module, nn.RNNCellBase)
    lstm = module.mode == "LSTM"
    x = np.array(x, dtype=np.float64)
    hx = None if hx is None else tuple(np.array(h, dtype=np.float64) for h in hx)
    extra = () if cell else (lengths,)

    def outputs():
        if reseed is not None:
            nn.manual_seed(reseed)
        out = module(x, _pack(hx, module.mode), *extra)
        return _flat(out, module.mode) if cell else (out[0], *_flat(out[1], module.mode))

    rng = np.random.default_rng(seed)
    douts = [rng.standard_normal(o.shape) for o in outputs()]
    module.clear_caches()

    def loss(_):
        with nn.no_grad():
            return float(sum(np.sum(o * d) for o, d in zip(outputs(), douts)))

    module.zero_grad()
    outputs()
    grads = _pack(douts, module.mode) if cell else (douts[0], _pack(douts[1:], module.mode))
    dx, dhx = module.backward(grads)
    errors = {"input": rel_error(dx, numerical_grad(loss, x))}
    if hx is not None:
        for i, (h, d) in enumerate(zip(hx, _flat(dhx, module.mode))):
            errors[f"state {i}"] = rel_error(d, numerical_grad(loss, h))
    for name, p in module.named_parameters():
        errors[name] = rel_error(p.grad, numerical_grad(loss, p.data))
    bad = {k: v for k, v in errors.items() if not v < tol}
    assert not bad, f"{module!r} (lstm={lstm}): finite-difference relative errors above {tol}: {bad}"


@pytest.mark.parametrize("name, kwargs", [("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu"}), ("LSTMCell", {}),
                                          ("GRUCell", {}), ("GRUCell", {"bias": False})])
@pytest.mark.parametrize("batched", [True, False])
def test_cells_finite_differences(name, kwargs, batched):
    rng = np.random.default_rng(1)
    cell = getattr(nn, name)(3, 4, rng=1, **kwargs)
    x = rng.standard_normal((2, 3) if batched else (3,))
    hx = tuple(rng.standard_normal((2, 4) if batched else (4,)) for _ in range(2 if name == "LSTMCell" else 1))
    check_finite_differences(cell, x, hx)


@pytest.mark.parametrize("name, kwargs", [("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}),
                                          ("LSTM", {"proj_size": 2}), ("GRU", {})])
@pytest.mark.parametrize("lengths", [None, [3, 1]])
def test_two_layer_bidirectional_stack_finite_differences(name, kwargs, lengths):
    rng = np.random.default_rng(2)
    layer = getattr(nn, name)(2, 3, num_layers=2, bidirectional=True, rng=2, **kwargs)
    x = rng.standard_normal((3, 2, 2))
    check_finite_differences(layer, x, _states(layer, x.shape, rng, np.float64), lengths)


def test_dropout_between_layers_finite_differences():
    """Training-mode dropout (same masks each forward): its backward is the mask, between the layers only."""
    rng = np.random.default_rng(3)
    layer = nn.GRU(2, 3, num_layers=2, dropout=0.5, bidirectional=True, batch_first=True, rng=3)
    x = rng.standard_normal((2, 4, 2))
    check_finite_differences(layer, x, reseed=7)


# --------------------------------------------------------------------------- PyTorch's behaviour around it
def test_dropout_is_between_layers_in_training_only(torch):
    ours = nn.LSTM(3, 4, num_layers=2, dropout=0.5, rng=0)
    theirs = torch.nn.LSTM(3, 4, num_layers=2, dropout=0.5)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    ours.eval(), theirs.eval()
    compare(torch, ours, theirs, x)                    # evaluation: no dropout, as PyTorch
    ours.train()
    nn.manual_seed(0)
    y1, _ = ours(x)
    nn.manual_seed(1)
    y2, (h2, c2) = ours(x)
    ours.clear_caches()
    assert not np.allclose(y1, y2)
    first = nn.LSTM(3, 4, rng=0)                       # the first layer's state is not dropped
    first.load_state_dict({k: v for k, v in ours.state_dict().items() if k.endswith("l0")})
    np.testing.assert_allclose(h2[0], first(x)[1][0][0], rtol=1e-6)
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        nn.GRU(3, 4, dropout=0.2)


@pytest.mark.parametrize("name, kwargs", [("RNN", {}), ("LSTM", {"proj_size": 2, "bidirectional": True}),
                                          ("GRU", {"bias": False, "bidirectional": True}),
                                          ("LSTM", {"bias": False, "proj_size": 1})])
def test_state_dict_keys_are_torchs(torch, name, kwargs):
    ours = getattr(nn, name)(3, 4, num_layers=2, **kwargs)
    theirs = getattr(torch.nn, name)(3, 4, num_layers=2, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in
                                                                   theirs.state_dict().items()}
    for cell in ("RNNCell", "LSTMCell", "GRUCell"):
        assert list(getattr(nn, cell)(3, 4).state_dict()) == list(getattr(torch.nn, cell)(3, 4).state_dict())


def test_initialisation_is_uniform_one_over_sqrt_hidden():
    layer = nn.LSTM(5, 16, num_layers=2, bidirectional=True, proj_size=3, rng=0)
    for name, p in layer.named_parameters():
        assert np.abs(p.data).max() <= 0.25 and np.abs(p.data).max() > 0.2, name
    assert np.abs(nn.GRUCell(3, 4, rng=0).weight_hh.data).max() <= 0.5


def test_bad_inputs_name_the_layer_and_shapes():
    lstm = nn.LSTM(10, 20, num_layers=2)
    with pytest.raises(ValueError, match=r"LSTM\(10, 20, num_layers=2\): expected input \(L, N, 10\).*got \(5, 3, 7\)"):
        lstm(np.zeros((5, 3, 7), np.float32))
    with pytest.raises(ValueError, match=r"LSTM\(10, 20, num_layers=2\): expected h0 of shape \(2, 3, 20\).*"
                                         r"got \(1, 3, 20\)"):
        lstm(np.zeros((5, 3, 10), np.float32), (np.zeros((1, 3, 20), np.float32), np.zeros((2, 3, 20), np.float32)))
    with pytest.raises(ValueError, match=r"expected c0 of shape \(2, 3, 20\).*got \(2, 3, 2\)"):
        lstm(np.zeros((5, 3, 10), np.float32), (np.zeros((2, 3, 20), np.float32), np.zeros((2, 3, 2), np.float32)))
    with pytest.raises(ValueError, match=r"GRU\(2, 3, batch_first=True\): expected h0 of shape \(1, 4, 3\)"):
        nn.GRU(2, 3, batch_first=True)(np.zeros((4, 5, 2), np.float32), np.zeros((1, 5, 3), np.float32))
    with pytest.raises(ValueError, match=r"lengths must be in \[1, L\] = \[1, 5\], got \[0, 5, 5\]"):
        lstm(np.zeros((5, 3, 10), np.float32), None, [0, 5, 5])
    with pytest.raises(ValueError, match=r"GRUCell\(3, 4\): expected input \(N, 3\) or \(3,\), got \(2, 5\)"):
        nn.GRUCell(3, 4)(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"LSTMCell\(3, 4\): expected c of shape \(2, 4\)"):
        nn.LSTMCell(3, 4)(np.zeros((2, 3), np.float32), (np.zeros((2, 4), np.float32), np.zeros((1, 4), np.float32)))
    with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
        nn.RNNBase("GRU", 3, 4, proj_size=2)
    with pytest.raises(ValueError, match=r"backward expected a gradient of shape \(5, 3, 20\)"):
        lstm(np.zeros((5, 3, 10), np.float32))
        lstm.backward(np.zeros((5, 3, 21), np.float32))


def test_none_gradients_count_as_zeros(torch):
    lstm = nn.LSTM(3, 4, bidirectional=True, rng=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    y, (h, c) = lstm(x)
    dx_none, _ = lstm.backward((np.ones_like(y), (None, None)))
    lstm(x)
    dx_zero, _ = lstm.backward((np.ones_like(y), (np.zeros_like(h), np.zeros_like(c))))
    np.testing.assert_array_equal(dx_none, dx_zero)
    lstm(x)
    dx_only_c, _ = lstm.backward((None, (None, np.ones_like(c))))
    assert np.abs(dx_only_c).sum() > 0


def test_pruned_weight_hh_matches_torch_prune(torch):
    """prune.l1_unstructured on an LSTM's weight_hh_l0: the layer computes with orig * mask through the
    parametrization, and the gradient reaches weight_hh_l0_orig masked, as PyTorch's."""
    ours, theirs = nn.LSTM(3, 5, num_layers=2, rng=4), torch.nn.LSTM(3, 5, num_layers=2)
    theirs.load_state_dict(to_torch_state(torch, ours.state_dict()))
    prune.l1_unstructured(ours, "weight_hh_l0", 0.5)
    importlib.import_module("torch.nn.utils.prune").l1_unstructured(theirs, "weight_hh_l0", 0.5)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    np.testing.assert_array_equal(ours.weight_hh_l0_mask, theirs.weight_hh_l0_mask.numpy())
    assert not np.all(ours.weight_hh_l0 == ours.weight_hh_l0_orig.data)
    x = np.random.default_rng(4).standard_normal((4, 2, 3)).astype(np.float32)
    compare(torch, ours, theirs, x)
    assert not ours.weight_hh_l0_orig.grad[ours.weight_hh_l0_mask == 0].any()


def test_two_calls_in_one_forward_keep_their_own_caches(torch):
    """The same GRU over two sequences (a shared encoder); backward in reverse call order."""
    ours, theirs = nn.GRU(3, 4, bidirectional=True, rng=5), torch.nn.GRU(3, 4, bidirectional=True)
    theirs.load_state_dict(to_torch_state(torch, ours.state_dict()))
    rng = np.random.default_rng(5)
    xa, xb = rng.standard_normal((3, 2, 3)).astype(np.float32), rng.standard_normal((5, 2, 3)).astype(np.float32)
    ya, _ = ours(xa)
    yb, hb = ours(xb, None, [5, 2])
    da, db, dh = (rng.standard_normal(a.shape).astype(np.float32) for a in (ya, yb, hb))
    dxb, _ = ours.backward((db, dh))
    dxa, _ = ours.backward(da)
    xat, xbt = torch.tensor(xa, requires_grad=True), torch.tensor(xb, requires_grad=True)
    yat, _ = theirs(xat)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xbt, torch.tensor([5, 2]), enforce_sorted=False)
    ybt, hbt = theirs(packed)
    ybt, _ = torch.nn.utils.rnn.pad_packed_sequence(ybt, total_length=5)
    loss = (yat * torch.from_numpy(da)).sum() + (ybt * torch.from_numpy(db)).sum()
    (loss + (hbt * torch.from_numpy(dh)).sum()).backward()
    assert_close(dxa, xat.grad.numpy(), "d xa", scale=GRAD_SCALE)
    assert_close(dxb, xbt.grad.numpy(), "d xb", scale=GRAD_SCALE)
    for name, p in theirs.named_parameters():
        assert_close(getattr(ours, name).grad, p.grad.numpy(), f"d {name}", scale=GRAD_SCALE)


def test_lengths_freeze_the_state_and_zero_the_output():
    lstm = nn.LSTM(2, 3, bidirectional=True, batch_first=True, rng=6)
    x = np.random.default_rng(6).standard_normal((2, 4, 2)).astype(np.float32)
    with nn.no_grad():
        y, (h, _) = lstm(x, None, [4, 2])
        y_short, (h_short, _) = lstm(x[1:, :2])
    assert not y[1, 2:].any()
    np.testing.assert_allclose(y[1, :2], y_short[0], rtol=1e-6)
    np.testing.assert_allclose(h[:, 1], h_short[:, 0], rtol=1e-6)


def test_model_file_round_trip(tmp_path):
    import minicompress.io as mio
    for layer in (nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, batch_first=True, rng=0),
                  nn.RNN(3, 4, nonlinearity="relu", bias=False, rng=0), nn.GRU(3, 4, dropout=0.3, num_layers=2, rng=0),
                  nn.LSTMCell(3, 4, rng=0), nn.RNNCell(3, 4, nonlinearity="relu", rng=0), nn.GRUCell(3, 4, bias=False)):
        mio.save(layer, tmp_path / "rnn.npz")
        loaded = mio.load(tmp_path / "rnn.npz")
        assert repr(loaded) == repr(layer) and type(loaded) is type(layer)
        assert getattr(loaded, "nonlinearity", None) == getattr(layer, "nonlinearity", None)
        x = np.random.default_rng(0).standard_normal((2, 3) if "Cell" in type(layer).__name__ else (2, 5, 3))
        x = x.astype(np.float32)
        with nn.no_grad():
            a, b = layer.eval()(x), loaded.eval()(x)
        for u, v in zip(_arrays(a), _arrays(b)):
            np.testing.assert_array_equal(u, v)


def _arrays(out):
    """The arrays of a (possibly nested) tuple of outputs, in order."""
    if isinstance(out, tuple):
        return [a for item in out for a in _arrays(item)]
    return [out]
