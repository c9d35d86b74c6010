"""Distillation across architectures: feature taps by module path, alignment of maps and tokens of
different widths and sizes (against PyTorch and finite differences), students initialised from their
teacher, and the Distiller wiring a ResNet teacher to MobileNetV2 / ViT students."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress import io, models, nn
from minicompress.data import load_digits
from minicompress.distill import ATLoss, Distiller, FeatureTaps, HintLoss, KDLoss, student_from_teacher
from minicompress.distill.features import at_loss_backward, at_loss_forward
from minicompress.nn import no_grad


def resnet(layers=(2, 1, 1), widths=(4, 8, 8), seed=0):
    return models.ResNet(models.BasicBlock, list(layers), 10, in_channels=1, small_input=True, widths=widths,
                         rng=np.random.default_rng(seed))


def vit(layers=4, seed=0):
    return models.VisionTransformer(8, 2, layers, 2, 8, 16, num_classes=10, in_channels=1,
                                    rng=np.random.default_rng(seed))


def mobilenet(seed=0):
    rows = [[1, 8, 1, 1], [2, 8, 3, 2], [2, 16, 2, 2]]                   # t, c, n, s
    return models.mobilenet_v2(10, width_mult=0.25, inverted_residual_setting=rows,
                               in_channels=1, small_input=True, rng=np.random.default_rng(seed))


def batch(n=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 1, 8, 8)).astype(np.float32)


# ---------------------------------------------------------------------------- taps
def test_taps_read_outputs_and_are_removed_without_a_trace():
    model = resnet().eval()
    x = batch()
    before = model(x)
    taps = FeatureTaps(model, ["layer3", "layer1.0"])
    taps.reset()
    logits = model(x)
    f3, f1 = taps.outputs()
    np.testing.assert_array_equal(logits, before)                          # the forward is unchanged
    assert f3.shape == (3, 8, 2, 2) and f1.shape == (3, 4, 8, 8)
    np.testing.assert_allclose(model.fc(model.flatten(model.avgpool(f3))), logits, rtol=1e-6)
    taps.remove()
    assert not any(m.forward_hooks() for m in model.modules())


def test_tap_gradient_is_added_where_the_feature_was_computed(fd, relerr):
    """d/d conv1.weight of sum(logits * a) + sum(layer2 * b): one backward with the tap's gradient."""
    model = resnet(seed=1).to(np.float64)
    x = batch(2).astype(np.float64)
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 10)), rng.normal(size=(2, 8, 4, 4))
    taps = FeatureTaps(model, ["layer2"])

    def total(_=None):
        with no_grad():
            taps.reset()
            logits = model(x)
            return float((logits * a).sum() + (taps.outputs()[0] * b).sum())
    model.zero_grad()
    taps.reset()
    model(x)
    taps.outputs()
    taps.add_grads([b])
    model.backward(a)
    taps.check_consumed()
    weight = model.conv1.weight
    numeric = fd(lambda w: (setattr(weight, "data", w), total())[1], weight.data.copy())
    assert relerr(weight.grad, numeric) < 1e-6


def test_bad_taps_say_what_is_there():
    model = resnet()
    with pytest.raises(ValueError, match=r"ResNet has no module 'layer9' to tap; its modules are: 'conv1', 'bn1', "
                                         r"'relu', 'maxpool', 'layer1', 'layer1\.0', 'layer1\.0\.conv1'"):
        FeatureTaps(model, ["layer9"])
    twice = nn.Sequential(nn.Linear(3, 3, rng=0), Twice(nn.ReLU()))
    taps = FeatureTaps(twice, ["1.inner"])
    taps.reset()
    twice(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"tapped module '1\.inner' of Sequential ran 2 times in one forward; "
                                         r"tap a module that runs exactly once \(e\.g\. its parent '1'\)"):
        taps.outputs()


class Twice(nn.Module):
    """Calls its child twice (y = f(f(x))), as a block reusing one activation module does."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(self.inner(x))


class SideBranch(nn.Module):
    """Runs ``side`` in its forward but returns ``main``'s output only: ``side`` leads nowhere."""

    def __init__(self):
        super().__init__()
        self.main, self.side = nn.Linear(3, 2, rng=0), nn.Linear(3, 2, rng=1)

    def forward(self, x):
        self.side(x)
        return self.main(x)

    def backward(self, grad_output):
        return self.main.backward(grad_output)


def test_a_tap_gradient_that_never_reaches_its_module_is_an_error():
    model, x = SideBranch(), np.ones((4, 3), np.float32)
    taps = FeatureTaps(model, ["side"])
    taps.reset()
    model(x)
    taps.add_grads(taps.outputs())
    model.backward(np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match=r"the backward of SideBranch never reached the tapped module\(s\) \['side'\]"):
        taps.check_consumed()


# ---------------------------------------------------------------------------- alignment, against PyTorch
def torch_hint_aligned(torch, hint, f_s, f_t):
    """The alignment of ``align.py`` written in torch: tokens -> map (class token dropped), adaptive
    average pooling to the common size, the regressor (1x1 conv, or Linear over channels-last), MSE."""
    F = torch.nn.functional
    w = torch.tensor(hint.regressor.weight.data, requires_grad=True)
    b = torch.tensor(hint.regressor.bias.data, requires_grad=True)
    s = torch.tensor(f_s, requires_grad=True)

    def as_map(f):
        if f.ndim == 3:
            g = int(round((f.shape[1] - 1) ** 0.5))
            return f[:, 1:].transpose(1, 2).reshape(f.shape[0], f.shape[2], g, g)
        return f
    m_s, m_t = as_map(s), as_map(torch.tensor(f_t))
    size = (min(m_s.shape[2], m_t.shape[2]), min(m_s.shape[3], m_t.shape[3]))
    m_s, m_t = F.adaptive_avg_pool2d(m_s, size), F.adaptive_avg_pool2d(m_t, size)
    if w.ndim == 4:
        out, target = F.conv2d(m_s, w, b), m_t
    else:
        out, target = F.linear(m_s.permute(0, 2, 3, 1), w, b), m_t.permute(0, 2, 3, 1)
    loss = F.mse_loss(out, target)
    loss.backward()
    return loss.item(), s.grad.numpy(), w.grad.numpy()


@st.composite
def mismatched_features(draw):
    """(student, teacher, conv): maps of different widths and sizes, or ViT tokens against a map."""
    n, cs, ct = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    gs, gt = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["maps", "student tokens", "teacher tokens"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    s_shape = (n, gs * gs + 1, cs) if kind == "student tokens" else (n, cs, gs, gs + draw(st.integers(0, 2)))
    t_shape = (n, gt * gt + 1, ct) if kind == "teacher tokens" else (n, ct, gt, gt)
    conv = kind != "student tokens" and draw(st.booleans())
    return rng.normal(size=s_shape).astype(np.float32), rng.normal(size=t_shape).astype(np.float32), conv


@given(mismatched_features(), st.integers(0, 100))
@settings(max_examples=60)
def test_hint_across_widths_sizes_and_tokens_matches_torch(torch, case, seed):
    f_s, f_t, conv = case
    cs = f_s.shape[1] if f_s.ndim == 4 else f_s.shape[2]
    ct = f_t.shape[1] if f_t.ndim == 4 else f_t.shape[2]
    hint = HintLoss(cs, ct, conv=conv, rng=seed)
    value, grad = hint(f_s, f_t), hint.backward()
    ref_value, ref_grad, ref_dw = torch_hint_aligned(torch, hint, f_s, f_t)
    assert grad.shape == f_s.shape
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6 * np.abs(ref_grad).max() + 1e-9)
    np.testing.assert_allclose(hint.regressor.weight.grad, ref_dw, rtol=1e-4, atol=1e-6 * np.abs(ref_dw).max() + 1e-9)


@given(mismatched_features())
@settings(max_examples=30)
def test_hint_and_at_across_architectures_finite_differences(fd, relerr, case):
    f_s, f_t, conv = (v.astype(np.float64) if isinstance(v, np.ndarray) else v for v in case)
    cs = f_s.shape[1] if f_s.ndim == 4 else f_s.shape[2]
    ct = f_t.shape[1] if f_t.ndim == 4 else f_t.shape[2]
    hint = HintLoss(cs, ct, conv=conv, rng=0).to(np.float64)
    hint(f_s, f_t)
    assert relerr(hint.backward(), fd(lambda x: hint(x, f_t), f_s.copy())) < 1e-6
    _, cache = at_loss_forward(f_s, f_t, 2.0)
    assert relerr(at_loss_backward(1.0, cache), fd(lambda x: at_loss_forward(x, f_t, 2.0)[0], f_s.copy())) < 1e-6


def test_at_between_a_vit_and_a_resnet_reads_patch_tokens_as_a_map(torch):
    """ViT tokens (N, 1 + 16, D) against a ResNet map (N, C, 2, 2): the 4x4 patch grid is pooled to 2x2."""
    from test_features import run_torch, torch_at_loss
    rng = np.random.default_rng(0)
    z, f_t = rng.normal(size=(2, 17, 6)).astype(np.float32), rng.normal(size=(2, 5, 2, 2)).astype(np.float32)
    loss = ATLoss()
    value, grad = loss(z, f_t), loss.backward()
    m = z[:, 1:].transpose(0, 2, 1).reshape(2, 6, 4, 4)
    ref_value, ref_grad_map = run_torch(torch, lambda s, t: torch_at_loss(torch, s, t, 2.0), m, f_t)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_array_equal(grad[:, 0], 0.0)                        # the class token has no place on the map
    np.testing.assert_allclose(grad[:, 1:], ref_grad_map.reshape(2, 6, 16).transpose(0, 2, 1), rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------------- students from their teacher
def test_resnet_student_keeps_every_kth_block_with_the_teachers_weights(tmp_path):
    teacher = resnet(layers=(3, 2, 1), seed=3)
    student = student_from_teacher(teacher, every=2)
    assert type(student) is models.ResNet and student.layers_config == (2, 1, 1)
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for key, value in s_state.items():
        teacher_key = key.replace("layer1.1.", "layer1.2.")                 # stage 1 keeps blocks 0 and 2
        np.testing.assert_array_equal(value, t_state[teacher_key], err_msg=key)
    io.save(student.eval(), tmp_path / "s.npz")
    x = batch()
    np.testing.assert_array_equal(io.load(tmp_path / "s.npz")(x), student(x))


def test_vit_and_mobilenet_students_keep_every_kth_block(tmp_path):
    teacher = vit(layers=4, seed=4)
    student = student_from_teacher(teacher, every=2)
    assert student.num_layers == 2 and len(student.encoder.layers) == 2
    t_state = teacher.state_dict()
    for key, value in student.state_dict().items():
        np.testing.assert_array_equal(value, t_state[key.replace("encoder_layer_1.", "encoder_layer_2.")], err_msg=key)
    teacher = mobilenet(seed=5)
    student = student_from_teacher(teacher, every=2)
    assert [row[2] for row in student.inverted_residual_setting] == [1, 2, 1]
    # features: stem 0 | row 1: 1 | row 2: teacher 2, 3, 4 -> 2, 4 | row 3: teacher 5, 6 -> 5 | last conv 7 -> 5
    mapping = {"0": "0", "1": "1", "2": "2", "3": "4", "4": "5", "5": "7"}
    t_state = teacher.state_dict()
    for key, value in student.state_dict().items():
        parts = key.split(".")
        if parts[0] == "features":
            parts[1] = mapping[parts[1]]
        np.testing.assert_array_equal(value, t_state[".".join(parts)], err_msg=key)
    for model in (student, student_from_teacher(vit(), every=3)):
        io.save(model.eval(), tmp_path / "m.npz")
        np.testing.assert_array_equal(io.load(tmp_path / "m.npz")(batch()), model(batch()))


def test_channel_pruned_teacher_as_student_trains_and_saves(tmp_path):
    x, y, _, _ = load_digits()
    x, y = x[:96], y[:96]
    teacher = resnet(seed=6).eval()
    before = teacher.state_dict()
    student = student_from_teacher(teacher, amount=0.5, example_input=x[:4])
    assert type(student) is models.ResNet and student.training
    assert student.conv1.out_channels == 2 and student.layer3[0].conv1.out_channels == 4
    start = {k: v.copy() for k, v in student.state_dict().items()}
    Distiller(KDLoss(T=2.0, alpha=0.5), epochs=1, batch_size=32, quiet=True, rng=0).fit(student, x, y, teacher=teacher)
    assert any(not np.array_equal(start[k], v) for k, v in student.state_dict().items())
    for key, value in teacher.state_dict().items():
        np.testing.assert_array_equal(value, before[key])                   # the teacher is untouched
    io.save(student.eval(), tmp_path / "p.npz")
    np.testing.assert_array_equal(io.load(tmp_path / "p.npz")(x[:5]), student(x[:5]))


def test_student_from_teacher_rejects_what_it_cannot_do():
    with pytest.raises(ValueError, match=r"give every= .* amount= .* or both"):
        student_from_teacher(resnet())
    with pytest.raises(ValueError, match=r"every must be an int >= 1, got 0"):
        student_from_teacher(resnet(), every=0)
    with pytest.raises(ValueError, match=r"needs example_input="):
        student_from_teacher(resnet(), amount=0.5)
    with pytest.raises(ValueError, match=r"needs a ResNet, MobileNetV2 or VisionTransformer, got Sequential"):
        student_from_teacher(models.digits_mlp(), every=2)


# ---------------------------------------------------------------------------- the Distiller across architectures
@pytest.mark.parametrize("make_student, losses, student_layers", [
    (mobilenet, lambda: [HintLoss(8, 8, rng=0), ATLoss()], ["features.2", "features.4"]),
    (vit, lambda: [HintLoss(8, 8, conv=False, rng=0), ATLoss()], ["encoder.layers.encoder_layer_0",
                                                                  "encoder.layers.encoder_layer_3"]),
])
def test_resnet_teacher_to_other_architectures_through_taps(make_student, losses, student_layers):
    x, y, _, _ = load_digits()
    x, y = x[:64], y[:64]
    teacher, student = resnet(seed=7).eval(), make_student(seed=8)
    feature_losses = losses()
    regressor = feature_losses[0].regressor.weight.data.copy()
    distiller = Distiller(KDLoss(), epochs=1, batch_size=32, quiet=True, rng=0, feature_loss=feature_losses,
                          student_layer=student_layers, teacher_layer=["layer2", "layer3"], feature_weight=[1.0, 10.0])
    distiller.fit(student, x, y, teacher=teacher)
    assert np.isfinite(distiller.history_[0]["loss"]).all()
    assert not np.allclose(feature_losses[0].regressor.weight.data, regressor)
    assert not any(m.forward_hooks() for model in (teacher, student) for m in model.modules())
    assert not teacher.training


def test_distiller_names_a_missing_tap():
    x, y, _, _ = load_digits()
    with pytest.raises(ValueError, match=r"Distiller \(student\): MobileNetV2 has no module 'layer2' to tap; its "
                                         r"modules are: 'features', 'features\.0'"):
        Distiller(epochs=1, quiet=True, feature_loss=ATLoss(), student_layer="layer2",
                  teacher_layer="layer2").fit(mobilenet(), x[:8], y[:8], teacher=resnet())
    with pytest.raises(TypeError, match=r"an int layer \(2\) taps model\[:2\] of a Sequential; ResNet needs a "
                                        r"module path"):
        Distiller(epochs=1, quiet=True, feature_loss=ATLoss(), student_layer="layer2",
                  teacher_layer=2).fit(resnet(), x[:8], y[:8], teacher=resnet())
