"""Shared strategies and helpers for the pruning tests (tie-free tensors, torch twins)."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import minicompress.nn as mnn

NORMS = [1, 2, 3.5, float("inf"), float("-inf"), "fro", -1.5]


@st.composite
def shapes(draw, min_dims: int = 1, max_dims: int = 4, max_side: int = 6) -> tuple[int, ...]:
    return tuple(draw(st.lists(st.integers(1, max_side), min_size=min_dims, max_size=max_dims)))


def distinct_tensor(shape: tuple[int, ...], seed: int, dtype=np.float32) -> np.ndarray:
    """Entries with pairwise distinct magnitudes (spaced >= 0.05 apart), random signs, shuffled."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    mags = (rng.permutation(n) + 1) * 0.1 + rng.uniform(0, 0.05, n)
    signs = rng.choice([-1.0, 1.0], n)
    return (signs * mags).reshape(shape).astype(dtype)


def channel_tensor(shape: tuple[int, ...], dim: int, seed: int, dtype=np.float32) -> np.ndarray:
    """Like ``distinct_tensor`` but channel c along ``dim`` has all |values| in [b_c, b_c + 0.3),
    with distinct integers b_c: every L_n norm ranks the channels by b_c, far from ties."""
    rng = np.random.default_rng(seed)
    t = distinct_tensor(shape, seed, np.float64)
    mags = np.abs(t) / (np.abs(t).max() + 1e-9) * 0.3  # [0, 0.3)
    base = rng.permutation(shape[dim]) + 1.0
    view = [1] * len(shape)
    view[dim] = shape[dim]
    return (np.sign(t) * (base.reshape(view) + mags)).astype(dtype)


def min_rel_gap(values: np.ndarray) -> float:
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if v.size < 2:
        return np.inf
    scale = np.maximum(np.abs(v[1:]), 1e-30)
    return float(np.min((v[1:] - v[:-1]) / scale))


class Holder(mnn.Module):
    """Test-only module owning one Parameter ``weight`` of any shape (pruning is layer-agnostic)."""

    def __init__(self, weight: np.ndarray) -> None:
        super().__init__()
        self.weight = mnn.Parameter(weight)

    def forward(self, x):
        self._save_for_backward(x)
        return self.array("weight") * x

    def backward(self, grad_output):
        self.accumulate_grad("weight", grad_output * self._saved())
        return grad_output * self.array("weight")


def torch_holder(torch, weight: np.ndarray):
    m = torch.nn.Module()
    m.weight = torch.nn.Parameter(torch.from_numpy(np.array(weight, copy=True)))
    return m


def same_bytes(a: np.ndarray, b) -> bool:
    """Equal dtype, shape and bytes (so -0.0 != 0.0 and NaN patterns count)."""
    b = b.detach().numpy() if hasattr(b, "detach") else np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == np.ascontiguousarray(b).tobytes()


def mask_planned(model, x, amount, **options):
    """Mask, with ``custom_from_mask``, every slice that ``channel_prune(model, x, amount, **options)`` removes:
    producers' rows and biases, consumers' columns, per-channel scales and shifts, and zero the parameters fed
    into merges there. Returns the plan ``[(group, removed units)]``. The masked model must then compute what
    the surgered one does."""
    from minicompress import prune
    from minicompress.prune import surgery

    dg = prune.dependency_graph(model, x, ignored_layers=options.pop("ignored_layers", ()))
    chosen = surgery.plan(dg, amount, options.pop("importance", "l1"), **options)
    params = dict(model.named_parameters())
    for group, units in chosen:
        for (name, role) in group.members:
            idx = group.indices((name, role), units)
            if role == "param":
                params[name].data[(slice(None),) * group.param_axes[name] + (idx,)] = 0
                continue
            module = group.modules[name]
            if hasattr(module, "hidden_size"):      # recurrent layers: the caller masks their hidden units
                continue
            axis = 1 if role == "in" or (role == "out" and isinstance(module, mnn.Embedding)) else 0
            names = ("weight",) if role == "in" else ("weight", "bias")
            for attr in names:
                if getattr(module, attr, None) is None:
                    continue
                mask = np.ones(module.array(attr).shape, np.float32)
                mask[(slice(None),) * axis + (idx,)] = 0
                prune.custom_from_mask(module, attr, mask)
    return chosen
