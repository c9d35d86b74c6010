"""Attention-head pruning: the smaller model equals the head-masked original; head importances by hand and by
finite differences of a gated loss (Michel et al.)."""
import numpy as np
import pytest

import minicompress.nn as mnn
from minicompress import io, metrics, models, prune
from minicompress.prune.heads import head_gate_importance, head_importance, plan_head_prune, prune_heads


def _vit(seed=0, dtype=np.float32):
    mnn_seed = np.random.default_rng(seed)
    v = models.VisionTransformer(image_size=8, patch_size=2, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=48,
                                 num_classes=10, in_channels=1, rng=mnn_seed)
    v.heads.head.weight.data = mnn_seed.normal(0, 0.3, v.heads.head.weight.shape).astype(np.float32)
    return v.to(dtype).eval()


def _encoder(seed=0):
    rng = np.random.default_rng(seed)
    layer = mnn.TransformerEncoderLayer(24, 6, dim_feedforward=32, dropout=0.0, batch_first=True, rng=rng)
    return mnn.TransformerEncoder(layer, num_layers=2).eval()


def _x(shape, seed=1, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _mask_heads(model, plan):
    """Zero the removed heads' q, k, v rows (weights and biases) and out_proj columns, with pruning masks."""
    modules = dict(model.named_modules())
    for name, removed in plan.items():
        m = modules[name]
        H, D = m.num_heads, m.head_dim
        rows = (removed[:, None] * D + np.arange(D)).ravel()
        qkv = np.concatenate([b * H * D + rows for b in range(3)])
        for attr in ("in_proj_weight", "in_proj_bias"):
            mask = np.ones(m.array(attr).shape, np.float32)
            mask[qkv] = 0
            prune.custom_from_mask(m, attr, mask)
        mask = np.ones(m.out_proj.weight.shape, np.float32)
        mask[:, rows] = 0
        prune.custom_from_mask(m.out_proj, "weight", mask)


@pytest.mark.parametrize("build, x", [(_vit, _x((3, 1, 8, 8))), (_encoder, _x((3, 5, 24)))])
@pytest.mark.parametrize("importance, amount", [("l1", 0.5), ("l2", 1), ("l1", 0.75)])
def test_pruned_heads_equal_the_masked_original(build, x, importance, amount):
    model = build()
    small = prune_heads(model, amount, importance)
    plan = plan_head_prune(model, amount, importance)
    masked = build()
    _mask_heads(masked, plan)
    with mnn.no_grad():
        expected, got = masked(x), small(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    removed = sum(len(r) for r in plan.values())
    E, D = (24, 4) if build is _encoder else (32, 8)
    assert metrics.count_params(small) == metrics.count_params(model) - removed * (3 * D * E + 3 * D + E * D)
    for name, m in small.named_modules():
        if isinstance(m, mnn.MultiheadAttention):
            H0 = dict(model.named_modules())[name].num_heads
            assert m.num_heads == H0 - len(plan[name]) and m.head_dim == D
            assert m.in_proj_weight.shape == (3 * m.num_heads * D, E) and m.out_proj.weight.shape == (E, m.num_heads * D)
    out = small(x)                                     # the smaller model trains
    small.train()
    small(x)
    small.backward(np.ones_like(out))


def test_head_magnitude_importance_by_hand():
    m = _vit().encoder.layers.encoder_layer_0.self_attention
    w = m.in_proj_weight.data.astype(np.float64)
    o = m.out_proj.weight.data.astype(np.float64)
    by_hand = [[np.abs(w[b * 32 + 8 * h: b * 32 + 8 * h + 8]).sum() for b in range(3)] for h in range(4)]
    expected = np.array([(sum(parts) + np.abs(o[:, 8 * h: 8 * h + 8]).sum()) / 4 for h, parts in enumerate(by_hand)])
    np.testing.assert_allclose(head_importance(m, 1), expected, rtol=1e-12)


def test_gate_importance_equals_finite_differences_of_a_gated_loss():
    """|dL_n / d xi_h| by central differences, a gate xi_h on head h's output put in by a forward pre-hook on
    out_proj (float64), averaged over the samples: equals head_gate_importance."""
    model, x, y = _vit(3, np.float64), _x((3, 1, 8, 8), 2, np.float64), np.array([1, 4, 7])
    loss = mnn.CrossEntropyLoss()
    got = head_gate_importance(model, loss, [(x, y)])
    assert all(p.grad is None for p in model.parameters())          # gradients left as they were
    name = "encoder.layers.encoder_layer_1.self_attention"
    m = dict(model.named_modules())[name]
    gate = np.ones(4)
    handle = m.out_proj.register_forward_pre_hook(
        lambda mod, args: (args[0] * np.repeat(gate, 8),) + tuple(args[1:]))
    expected = np.zeros(4)
    with mnn.no_grad():
        for n in range(3):
            for h in range(4):
                eps = 1e-6
                gate[h] = 1 + eps
                up = loss(model(x[n:n + 1]), y[n:n + 1])
                gate[h] = 1 - eps
                down = loss(model(x[n:n + 1]), y[n:n + 1])
                gate[h] = 1.0
                expected[h] += abs(up - down) / (2 * eps) / 3
    handle.remove()
    np.testing.assert_allclose(got[name], expected, rtol=1e-6)
    assert set(got) == {f"encoder.layers.encoder_layer_{i}.self_attention" for i in range(2)}
    small = prune_heads(model, 0.5, got)
    assert [small.encoder.layers[i].self_attention.num_heads for i in range(2)] == [2, 2]


def test_global_ranking_min_heads_ignored_and_model_files(tmp_path):
    model = _vit()
    plan = plan_head_prune(model, 0.5, "l2", global_pruning=True)
    assert sum(len(r) for r in plan.values()) == 4 and all(len(r) <= 3 for r in plan.values())
    plan = plan_head_prune(model, 10, "l1", min_heads=2)
    assert all(len(r) == 2 for r in plan.values())
    first = "encoder.layers.encoder_layer_0.self_attention"
    small = prune_heads(model, 0.5, ignored_layers=[first])
    assert small.encoder.layers.encoder_layer_0.self_attention.num_heads == 4
    assert small.encoder.layers.encoder_layer_1.self_attention.num_heads == 2
    io.save(small, tmp_path / "vit.npz")
    back = io.load(tmp_path / "vit.npz").eval()
    x = _x((2, 1, 8, 8))
    with mnn.no_grad():
        np.testing.assert_array_equal(back(x), small(x))


def test_bad_input_names_the_module():
    with pytest.raises(ValueError, match="has no MultiheadAttention"):
        prune_heads(mnn.Sequential(mnn.Linear(2, 2)), 0.5)
    with pytest.raises(ValueError, match=r"scores of 'encoder.layers.encoder_layer_0.self_attention' have shape"):
        prune_heads(_vit(), 0.5, {f"encoder.layers.encoder_layer_{i}.self_attention": np.ones(3) for i in range(2)})
    with pytest.raises(ValueError, match="head_dim=9 x num_heads"):
        mnn.MultiheadAttention(16, 2, head_dim=9)
