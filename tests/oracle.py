"""Run a minicompress layer and its PyTorch twin on the same weights and compare everything.

The twin gets our ``state_dict()`` through ``load_state_dict(strict=True)`` (so keys and layouts are
checked too); both run forward on the same input, then backward of L = sum(y * dout) (PyTorch:
``(out * dout).sum().backward()``). Output, d L / d input, every parameter gradient and every buffer
after the forward (running statistics, ``num_batches_tracked``) must agree.
"""
from __future__ import annotations

import numpy as np


def assert_close(ours: np.ndarray, theirs: np.ndarray, what: str, rtol: float = 1e-5, atol: float = 1e-5,
                 scale: float = 1e-3) -> None:
    """|ours - theirs| <= atol * S + rtol * |theirs|, S = max(max|theirs|, scale): atol is relative to the
    array's scale, which covers float32 rounding in long sums without loosening the check of large entries.
    ``scale`` is the size of the summed terms when a result cancels to far below them."""
    theirs = np.asarray(theirs)
    assert np.shape(ours) == theirs.shape, f"{what}: shape {np.shape(ours)} != PyTorch's {theirs.shape}"
    scale = max(float(np.abs(theirs).max()) if theirs.size else 0.0, scale)
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol * scale, err_msg=what)


def to_torch_state(torch, state: dict) -> dict:
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()}


def compare_with_torch(torch, ours, theirs, x: np.ndarray, train: bool = True, seed: int = 0,
                       rtol: float = 1e-5, atol: float = 1e-5, check_repr: bool = True, dx_scale: float = 1e-3):
    """Load our weights into ``theirs``, run both, compare; returns (y, dx) of ours.

    ``dx_scale``: the size of the terms of d input, for layers whose input gradient cancels (BatchNorm).
    """
    theirs.load_state_dict(to_torch_state(torch, ours.state_dict()), strict=True)
    ours.train(train)
    theirs.train(train)
    if check_repr:
        assert repr(ours) == repr(theirs)

    y = ours(x)
    dout = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
    dx = ours.backward(dout)

    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    (yt * torch.from_numpy(dout)).sum().backward()

    assert_close(y, yt.detach().numpy(), "output", rtol, atol)
    assert y.dtype == x.dtype, f"output dtype {y.dtype} != input dtype {x.dtype}"
    assert_close(dx, xt.grad.numpy(), "d input", rtol, atol, dx_scale)
    params = dict(theirs.named_parameters())
    assert sorted(name for name, _ in ours.named_parameters()) == sorted(params)
    for name, p in ours.named_parameters():
        assert_close(p.grad, params[name].grad.numpy(), f"d {name}", rtol, atol)
        assert p.grad.dtype == p.data.dtype
    buffers = dict(theirs.named_buffers())
    for name, b in ours.named_buffers():
        expected = buffers[name].numpy()
        if expected.dtype.kind == "i":
            assert b.dtype == expected.dtype and np.array_equal(b, expected), name
        else:
            assert_close(b, expected, name, rtol, atol)
    return y, dx


def hand_observed_ranges(torch, prepared, theirs, rtol: float = 1e-5, atol: float = 0.0) -> list[str]:
    """Check that every observer of our ``prepared`` model saw what PyTorch's ``theirs`` saw (min / max within
    ``rtol``: the float layers before them sum in another order), then give PyTorch's observers our min, max and
    histogram, so that everything after calibration can be compared exactly. Returns the observer names."""
    their_modules = dict(theirs.named_modules())
    names = []
    for key, obs in prepared.named_modules():
        if not key.endswith("activation_post_process") or not hasattr(obs, "min_val"):
            continue
        names.append(key)
        t = their_modules[key]
        for attr in ("min_val", "max_val", "histogram"):
            if hasattr(t, attr) and hasattr(obs, attr):
                mine = np.asarray(getattr(obs, attr), dtype=np.float32)
                if attr != "histogram":
                    np.testing.assert_allclose(mine, getattr(t, attr).numpy(), rtol=rtol, atol=atol,
                                               err_msg=f"{key}.{attr}")
                getattr(t, attr).resize_(mine.shape).copy_(torch.from_numpy(mine))
    return names


def randomise_batchnorm(model, seed: int = 0):
    """Random BatchNorm scales, shifts and running statistics (so that folding and masking are exercised)."""
    from minicompress import nn as mnn
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, (mnn.BatchNorm1d, mnn.BatchNorm2d)):
            n = m.num_features
            m.weight.data = rng.uniform(0.5, 1.5, n).astype(np.float32)
            m.bias.data = rng.normal(0, 0.3, n).astype(np.float32)
            m.running_mean = rng.normal(0, 0.3, n).astype(np.float32)
            m.running_var = rng.uniform(0.5, 2, n).astype(np.float32)
    return model
