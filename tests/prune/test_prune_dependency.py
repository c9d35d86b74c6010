"""Channel pruning on dependency groups: real architectures, Torch-Pruning side by side, the masked-model invariant.

The invariant: ``mask_planned`` zeroes, in the original model, every slice ``channel_prune`` removes
(producers' rows and biases, BatchNorm scales and shifts, consumers' columns, parameters fed into merges);
the surgered model must then compute what the masked one does, on random inputs with random BatchNorm
statistics. Tolerances are float32 ones scaled by the output's magnitude: the two models sum the same
products over different numbers of zero terms, in different orders.
"""
import numpy as np
import pytest

import minicompress.nn as mnn
from minicompress import metrics, models, prune
from minicompress.nn.graph import trace_graph
from minicompress.nn.kinds import is_weighted
from tests.oracle import randomise_batchnorm
from tests.prune.prune_testing import mask_planned


def _randomise_bn(model):
    return randomise_batchnorm(model).eval()


def _x(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _kept_params_and_removed_macs(masked, x):
    """Parameters that survive (mask ones; everything unmasked) and the MACs of the masked weights: per
    weighted call, masked weight entries times the output positions each one is used at."""
    params = 0
    for m in masked.modules():
        for name, p in m.named_parameters(recurse=False):
            params += int(getattr(m, name.replace("_orig", "_mask")).sum()) if name.endswith("_orig") else p.size
    macs = 0
    for node in trace_graph(masked, x[:1]).nodes:
        m = node.module
        if is_weighted(m):
            if not prune.is_pruned(m):
                continue
            out = node.out_shapes[0]
            positions = int(np.prod(out[2:])) if m.__class__.__name__.startswith("Conv") else int(np.prod(out[1:-1]))
            macs += int(m.weight_mask.size - np.count_nonzero(m.weight_mask)) * positions
    return params, macs


CASES = {
    "resnet18": (lambda: models.resnet18(num_classes=10, small_input=True), (2, 3, 16, 16)),
    "resnet50": (lambda: models.resnet50(num_classes=10, small_input=True), (2, 3, 8, 8)),
    "resnet20": (lambda: models.resnet20(num_classes=10, in_channels=1), (2, 1, 8, 8)),
    "mobilenet_v2": (lambda: models.mobilenet_v2(num_classes=10, width_mult=0.5, in_channels=1, small_input=True),
                     (2, 1, 16, 16)),
    "vit": (lambda: models.VisionTransformer(image_size=8, patch_size=2, num_layers=2, num_heads=4, hidden_dim=32,
                                             mlp_dim=48, num_classes=10, in_channels=1), (2, 1, 8, 8)),
}


@pytest.mark.parametrize("name, importance", [("resnet20", "l1"), ("resnet20", "l2"), ("resnet18", "l2"),
                                              ("resnet50", "l1"), ("mobilenet_v2", "l1"), ("mobilenet_v2", "l2"),
                                              ("vit", "l1"), ("vit", "l2")])
def test_surgered_model_equals_the_masked_original(name, importance):
    build, shape = CASES[name]
    model, x = _randomise_bn(build()), _x(shape)
    with mnn.no_grad():
        dense_out = model(x)
    small = prune.channel_prune(model, x, 0.5, importance)
    masked = _randomise_bn(build())
    masked.load_state_dict(model.state_dict())
    chosen = mask_planned(masked, x, 0.5, importance=importance)
    assert sum(len(units) for _, units in chosen) > 0
    with mnn.no_grad():
        expected, got = masked(x), small(x)
        np.testing.assert_array_equal(model(x), dense_out)              # the input model is untouched
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)
    params, removed_macs = _kept_params_and_removed_macs(masked, x)
    assert metrics.count_params(small) == params < metrics.count_params(model)
    assert metrics.count_macs(small, shape[1:]) == metrics.count_macs(model, shape[1:]) - removed_macs
    assert removed_macs > 0


def test_groups_of_a_resnet_follow_the_residuals():
    model = models.resnet20(num_classes=10, in_channels=1)
    dg = prune.dependency_graph(model, _x((2, 1, 8, 8)))
    stem = dg.groups[0]
    assert stem.root == "conv1" and stem.channels == 16
    # the stem's channels run through every identity shortcut of stage 1 into stage 2's first block
    outs = sorted(n for n, role in stem.members if role == "out")
    assert outs == ["conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"]
    ins = sorted(n for n, role in stem.members if role == "in")
    assert ins == ["layer1.0.conv1", "layer1.1.conv1", "layer1.2.conv1", "layer2.0.conv1", "layer2.0.downsample.0"]
    assert dg.refused() == {"fc": "output 0 of the model keeps its width"}


def test_vit_prunes_mlp_hidden_units_and_refuses_the_residual_stream_by_name():
    build, shape = CASES["vit"]
    model, x = build(), _x(shape)
    dg = prune.dependency_graph(model, x)
    assert [g.root for g in dg.prunable()] == [f"encoder.layers.encoder_layer_{i}.mlp.0" for i in range(2)]
    why = dg.refused()["conv_proj"]
    assert "ln_1" in why and "LayerNorm" in why
    small = prune.channel_prune(model, x, 0.25)
    assert small.encoder.layers.encoder_layer_0.mlp[0].out_features == 36
    assert small.encoder.layers.encoder_layer_0.mlp[3].in_features == 36
    assert small.conv_proj.out_channels == 32


@pytest.fixture(scope="module")
def tp_and_torch(torch):
    tp = pytest.importorskip("torch_pruning")
    return torch, tp


def _twin(torch, name):
    import sys, os
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
    from torch_twins import mobilenet_v2_twin, resnet_twin
    return {
        "resnet20": lambda: resnet_twin(torch, "basic", [3, 3, 3], 10, in_channels=1, small_input=True,
                                        widths=(16, 32, 64)),
        "resnet18": lambda: resnet_twin(torch, "basic", [2, 2, 2, 2], 10, small_input=True),
        "resnet50": lambda: resnet_twin(torch, "bottleneck", [3, 4, 6, 3], 10, small_input=True),
        "mobilenet_v2": lambda: mobilenet_v2_twin(torch, 10, 0.5, in_channels=1, small_input=True),
    }[name]()


@pytest.mark.parametrize("name, p, options", [
    ("resnet20", 1, {}), ("resnet20", 2, {"global_pruning": True}),
    ("resnet20", 1, {"global_pruning": True, "max_ratio": 0.7}),
    ("resnet18", 1, {}), ("resnet50", 2, {}),
    ("mobilenet_v2", 1, {}), ("mobilenet_v2", 2, {"round_to": 8}), ("mobilenet_v2", 2, {"global_pruning": True}),
])
def test_same_model_as_torch_pruning(tp_and_torch, name, p, options):
    """Torch-Pruning's MetaPruner with MagnitudeImportance(p) (group mean, mean-normalised), ratio 0.5, the
    classifier ignored, on a twin with our weights: the pruned state dicts are identical — every width and
    every kept channel — and so are the parameter counts. (Its MAC counter also counts BatchNorm, ReLU,
    pooling and additions; ours counts the multiply-accumulates of convolutions and Linear layers.)"""
    torch, tp = tp_and_torch
    build, shape = CASES[name]
    ours, twin = build().eval(), _twin(torch, name).eval()
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    x = _x(shape)
    head = twin.fc if hasattr(twin, "fc") else twin.classifier[1]
    extra = {"max_pruning_ratio": options["max_ratio"]} if "max_ratio" in options else {}
    pruner = tp.pruner.MetaPruner(twin, torch.from_numpy(x), importance=tp.importance.MagnitudeImportance(p=p),
                                  pruning_ratio=0.5, ignored_layers=[head], global_pruning=options.get(
                                      "global_pruning", False), round_to=options.get("round_to"), **extra)
    pruner.step()
    small = prune.channel_prune(ours, x, 0.5, f"l{p}", **options)
    theirs = {k: v.detach().numpy() for k, v in twin.state_dict().items()}
    mine = small.state_dict()
    assert sorted(mine) == sorted(theirs)
    for key in mine:
        assert mine[key].shape == theirs[key].shape, key
        np.testing.assert_array_equal(mine[key], theirs[key], err_msg=key)
    assert metrics.count_params(small) == sum(p.numel() for p in twin.parameters())


# -- the rules, one small model each ------------------------------------------------------------------------
class CatNet(mnn.Module):
    """Two branches concatenated along the channels, then a 1x1 conv: the consumer's columns are offset."""

    def __init__(self, rng):
        super().__init__()
        self.a, self.b = mnn.Conv2d(2, 4, 3, padding=1, rng=rng), mnn.Conv2d(2, 6, 1, rng=rng)
        self.bn_b = mnn.BatchNorm2d(6)
        self.cat = mnn.Cat(1)
        self.fuse = mnn.Conv2d(10, 5, 1, rng=rng)
        self.pool, self.flat, self.fc = mnn.AdaptiveAvgPool2d(1), mnn.Flatten(), mnn.Linear(5, 3, rng=rng)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.fuse(self.cat(self.a(x), self.bn_b(self.b(x)))))))


def test_cat_maps_channel_ranges_with_their_offsets():
    model, x = _randomise_bn(CatNet(np.random.default_rng(0))), _x((2, 2, 5, 5))
    plan = prune.plan_channel_prune(model, x, 0.5)
    small = prune.channel_prune(model, x, 0.5)
    cols = np.concatenate([plan["a"], 4 + plan["b"]])
    np.testing.assert_array_equal(small.fuse.weight.data, model.fuse.weight.data[plan["fuse"]][:, cols])
    masked = _randomise_bn(CatNet(np.random.default_rng(0)))
    masked.load_state_dict(model.state_dict())
    mask_planned(masked, x, 0.5)
    with mnn.no_grad():
        np.testing.assert_allclose(small(x), masked(x), rtol=1e-5, atol=1e-6)


class Gated(mnn.Module):
    """PReLU(C), GroupNorm, a Mul gate and a Permute -> Linear over the channels."""

    def __init__(self, rng):
        super().__init__()
        self.conv, self.act = mnn.Conv2d(3, 8, 3, padding=1, rng=rng), mnn.PReLU(8)
        self.gn = mnn.GroupNorm(4, 8)
        self.gate_conv, self.gate = mnn.Conv2d(3, 8, 1, rng=rng), mnn.Sigmoid()
        self.mul = mnn.Mul()
        self.pool, self.permute = mnn.AdaptiveAvgPool2d(2), mnn.Permute([0, 2, 3, 1])
        self.fc = mnn.Linear(8, 4, rng=rng)

    def forward(self, x):
        y = self.mul(self.gn(self.act(self.conv(x))), self.gate(self.gate_conv(x)))
        return self.fc(self.permute(self.pool(y)))


def test_prelu_groupnorm_by_whole_groups_mul_and_permute():
    rng = np.random.default_rng(3)
    model, x = Gated(rng), _x((2, 3, 6, 6))
    model.act.weight.data = rng.uniform(0.1, 0.5, 8).astype(np.float32)
    model.gn.weight.data = rng.uniform(0.5, 1.5, 8).astype(np.float32)
    model.gn.bias.data = rng.normal(0, 0.3, 8).astype(np.float32)
    dg = prune.dependency_graph(model, x)
    (group,) = dg.prunable()
    assert group.channels == 4 and all(len(u[("gn", "channel")]) == 2 for u in group.units)   # 4 groups of 2
    assert sorted(n for n, r in group.members if r == "out") == ["conv", "gate_conv"]
    small = prune.channel_prune(model, x, 0.5)
    assert (small.gn.num_groups, small.gn.num_channels, small.act.num_parameters, small.fc.in_features) == (2, 4, 4, 4)
    masked = Gated(np.random.default_rng(0))
    masked.load_state_dict(model.state_dict())
    mask_planned(masked, x, 0.5)
    with mnn.no_grad():
        np.testing.assert_allclose(small(x), masked(x), rtol=1e-5, atol=1e-6)


def test_refusals_name_the_module():
    grouped = mnn.Sequential(mnn.Conv2d(4, 8, 1), mnn.ReLU(), mnn.Conv2d(8, 8, 3, groups=2), mnn.Flatten(),
                             mnn.Linear(8 * 16, 2))
    dg = prune.dependency_graph(grouped, _x((2, 4, 6, 6)))
    assert "'2' (Conv2d) is a grouped convolution" in dg.refused()["0"]
    softmaxed = mnn.Sequential(mnn.Linear(4, 6), mnn.Softmax(dim=1), mnn.Linear(6, 2))
    assert "normalises over the channel axis" in prune.dependency_graph(softmaxed, _x((2, 4))).refused()["0"]
    across = mnn.Sequential(mnn.Linear(4, 6), mnn.Softmax(dim=0), mnn.Linear(6, 2))   # over the batch: fine
    assert [g.root for g in prune.dependency_graph(across, _x((2, 4))).prunable()] == ["0"]
    with pytest.raises(ValueError, match=r"ignored_layers \['nope'\]"):
        prune.channel_prune(grouped, _x((2, 4, 6, 6)), 0.5, ignored_layers=["nope"])
    kept = prune.channel_prune(softmaxed, _x((2, 4)), 0.5)
    assert kept[0].out_features == 6


def test_ignored_layers_round_to_ratios_and_counts():
    model, x = models.resnet20(num_classes=10, in_channels=1), _x((2, 1, 8, 8))
    small = prune.channel_prune(model, x, 0.5, ignored_layers=["layer3.0.conv1"],
                                ratios={"layer2.1.conv1": 0.25}, round_to=4)
    assert small.layer3[0].conv1.out_channels == 64
    assert small.layer2[1].conv1.out_channels == 24            # 32 - int(32 * 0.75) = 8 removed
    assert small.layer1[0].conv1.out_channels == 8
    assert prune.prune_count(10, 0.3) == 10 - int(10 * 0.7)
    assert prune.prune_count(10, 0.5, round_to=4) == 6          # keep 5 -> 4
    assert prune.prune_count(6, 0.5, round_to=8) == 0           # keep 3 -> 0: the group stays whole
    assert prune.prune_count(8, 1.0) == 7 and prune.prune_count(8, 3) == 3
    with pytest.raises(ValueError, match="round_to"):
        prune.channel_prune(model, x, 0.5, round_to=0)


def test_taylor_and_random_importance():
    model, x = models.resnet20(num_classes=10, in_channels=1), _x((4, 1, 8, 8))
    with pytest.raises(ValueError, match="needs gradients"):
        prune.channel_prune(model, x, 0.5, "taylor")
    loss = mnn.CrossEntropyLoss()
    loss(model(x), np.array([0, 1, 2, 3]))
    model.backward(loss.backward())
    small = prune.channel_prune(model, x, 0.5, "taylor")
    assert small.conv1.out_channels == 8
    dg = prune.dependency_graph(model, x)
    group = dg.groups[1]                                      # layer1.0.conv1 -> bn1 -> conv2
    conv, nxt = model.layer1[0].conv1, model.layer1[0].conv2
    f64 = lambda p: (p.data.astype(np.float64), p.grad.astype(np.float64))  # noqa: E731
    (w, g), (w2, g2) = f64(conv.weight), f64(nxt.weight)
    parts = [np.abs(w * g).reshape(16, -1).sum(1), np.abs(w2 * g2).transpose(1, 0, 2, 3).reshape(16, -1).sum(1)]
    expected = sum(parts) / 2                                  # BatchNorm scored only by magnitude importances
    expected = expected / expected.mean()
    np.testing.assert_allclose(prune.TaylorImportance()(group), expected, rtol=1e-10)
    a = prune.channel_prune(model, x, 0.5, prune.RandomImportance(rng=0))
    b = prune.channel_prune(model, x, 0.5, prune.RandomImportance(rng=0))
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(np.array_equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_activation_importance_drives_channel_prune():
    """APoZ scores measured at the ReLUs (keyed by the ReLU's name) rank the channels of the group whose
    outputs they are: channels that never fire go first."""
    rng = np.random.default_rng(0)
    model = mnn.Sequential(mnn.Conv2d(1, 6, 3, padding=1, rng=rng), mnn.ReLU(), mnn.Conv2d(6, 4, 3, rng=rng),
                           mnn.ReLU(), mnn.Flatten(), mnn.Linear(4 * 36, 3, rng=rng))
    model[0].bias.data[[1, 4]] = -100.0                       # channels 1 and 4 are always 0 after the ReLU
    x = _x((8, 1, 8, 8))
    scores = prune.activation_importance(model, [x], criterion="apoz")
    assert set(scores) == {"1", "3"} and scores["1"][[1, 4]].tolist() == [0.0, 0.0]
    dg = prune.dependency_graph(model, x)
    assert sorted(dg.groups[0].taps) == ["0", "1"]            # the conv's and the ReLU's outputs are its channels
    plan = prune.plan_channel_prune(model, x, 2, scores)
    assert sorted(set(range(6)) - set(plan["0"])) == [1, 4]
    small = prune.channel_prune(model, x, 2, scores, layers=["0"])
    with mnn.no_grad():
        np.testing.assert_allclose(small(x), model(x), rtol=1e-5, atol=1e-6)   # dead channels: same outputs


def test_channel_pruner_steps_follow_the_initial_widths():
    model, x = models.resnet20(num_classes=10, in_channels=1), _x((2, 1, 8, 8))
    one_shot = prune.channel_prune(model, x, 0.5, "l2")
    pruner = prune.ChannelPruner(model, x, 0.5, "l2", iterative_steps=3)
    widths = []
    for _ in range(3):
        pruner.step()
        widths.append((model.conv1.out_channels, model.layer3[0].conv1.out_channels))
    assert widths == [(16 - 3, 64 - 11), (10, 42), (8, 32)]      # int(C0 * (1 - r_s)), r_s = 0.5 s / 3
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in one_shot.state_dict().items()}
    with pytest.raises(ValueError, match="all 3 steps"):
        pruner.step()
    with pytest.raises(ValueError, match="final ratio"):
        prune.ChannelPruner(model, x, 2)


def test_channel_pruner_equals_torch_pruning_iterative(tp_and_torch):
    torch, tp = tp_and_torch
    build, shape = CASES["resnet20"]
    ours, twin = build().eval(), _twin(torch, "resnet20").eval()
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    x = _x(shape)
    pruner = tp.pruner.MetaPruner(twin, torch.from_numpy(x), importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=0.5, iterative_steps=3, ignored_layers=[twin.fc])
    mine = prune.ChannelPruner(ours, x, 0.5, "l1", iterative_steps=3)
    for _ in range(3):
        pruner.step()
        mine.step()
        theirs = {k: v.detach().numpy() for k, v in twin.state_dict().items()}
        for key, value in ours.state_dict().items():
            np.testing.assert_array_equal(value, theirs[key], err_msg=key)


class SeqNet(mnn.Module):
    """Linear embedding -> a 2-layer (bidirectional) recurrent layer -> Linear on the last step's output."""

    def __init__(self, kind, bidirectional, rng):
        super().__init__()
        self.embed = mnn.Linear(8, 6, rng=rng)
        cls = {"lstm": mnn.LSTM, "gru": mnn.GRU, "rnn": mnn.RNN}[kind]
        self.rnn = cls(6, 10, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.last = SelectLast()
        self.fc = mnn.Linear(10 * (2 if bidirectional else 1), 4, rng=rng)

    def forward(self, x):
        out, _ = self.rnn(self.embed(x))
        return self.fc(self.last(out))

    def backward(self, grad_output):
        d_x, _ = self.rnn.backward((self.last.backward(self.fc.backward(grad_output)), None))
        return self.embed.backward(d_x)


class SelectLast(mnn.Module):
    declared_kind = "features"

    def forward(self, x):
        self._save_for_backward(x.shape)
        return x[:, -1]

    def backward(self, grad_output):
        dx = np.zeros(self._saved(), grad_output.dtype)
        dx[:, -1] = grad_output
        return dx


def dg_refused(model, x, ignored):
    return {k: v for k, v in prune.dependency_graph(model, x, ignored_layers=ignored).refused().items() if k != "fc"}


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_hidden_units_are_pruned_across_layers_and_directions(kind, bidirectional):
    model, x = SeqNet(kind, bidirectional, np.random.default_rng(0)).eval(), _x((3, 5, 8))
    dg = prune.dependency_graph(model, x)
    roots = {g.root: g for g in dg.prunable()}
    assert set(roots) == {"embed", "rnn"} and roots["rnn"].channels == 10
    assert sorted(roots["rnn"].members) == [("fc", "in"), ("rnn", "hidden")]
    assert dg_refused(model, x, ["rnn"]) == {"rnn": "'rnn' is in ignored_layers"}
    small = prune.channel_prune(model, x, 0.5, "l2")
    assert (small.rnn.hidden_size, small.rnn.input_size, small.embed.out_features) == (5, 3, 3)
    assert small.fc.in_features == 5 * (2 if bidirectional else 1)
    masked = SeqNet(kind, bidirectional, np.random.default_rng(0)).eval()
    masked.load_state_dict(model.state_dict())
    chosen = mask_planned(masked, x, 0.5, importance="l2")
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    for group, units in chosen:                 # mask_planned knows Linear members; the hidden units by hand
        if group.root != "rnn":
            continue
        for name, p in masked.rnn.named_parameters():
            rows = np.concatenate([g * 10 + units for g in range(gates)])
            p.data[rows] = 0
            if name.startswith("weight_hh"):
                p.data[:, units] = 0
    with mnn.no_grad():
        np.testing.assert_allclose(small(x), masked(x), rtol=1e-5, atol=1e-6)
    out = small(x)
    small.backward(np.ones_like(out))            # the smaller model trains
