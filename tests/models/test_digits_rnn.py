"""The digits as sequences: models.DigitsRNN (rows -> GRU/LSTM/RNN -> final hidden state -> Linear)."""
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gradcheck import check_module_grads  # noqa: E402

from minicompress import io, models, quant  # noqa: E402


@settings(max_examples=8)      # every example differentiates ~1,000 numbers twice: the layers' own tests go wider
@given(mode=st.sampled_from(["GRU", "LSTM", "RNN"]), layers=st.integers(1, 2), bidirectional=st.booleans(),
       hidden=st.integers(1, 3), seed=st.integers(0, 1000))
def test_digits_rnn_gradients_match_finite_differences(mode, layers, bidirectional, hidden, seed):
    model = models.digits_rnn(mode, hidden, layers, bidirectional, num_classes=3, rng=np.random.default_rng(seed))
    x = np.random.default_rng(seed).standard_normal((2, 1, 8, 8))
    check_module_grads(model, x, tol=1e-5)


@pytest.mark.parametrize("mode,bidirectional", [("GRU", False), ("LSTM", True)])
def test_digits_rnn_matches_torch(torch, mode, bidirectional):
    model = models.digits_rnn(mode, 6, 2, bidirectional, rng=np.random.default_rng(0))
    D = 2 if bidirectional else 1
    rnn = getattr(torch.nn, mode)(8, 6, num_layers=2, batch_first=True, bidirectional=bidirectional)
    fc = torch.nn.Linear(D * 6, 10)
    state = {k: torch.from_numpy(v) for k, v in model.state_dict().items()}
    rnn.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("rnn.")})
    fc.load_state_dict({k[3:]: v for k, v in state.items() if k.startswith("fc.")})
    x = np.random.default_rng(1).standard_normal((5, 1, 8, 8)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_()
    _, h = rnn(xt.flatten(1, 2))
    h_n = h[0] if mode == "LSTM" else h
    y_t = fc(torch.cat(list(h_n[-D:]), dim=-1))
    dy = np.random.default_rng(2).standard_normal(y_t.shape).astype(np.float32)
    y_t.backward(torch.from_numpy(dy))
    y = model(x)
    np.testing.assert_allclose(y, y_t.detach().numpy(), rtol=1e-5, atol=1e-6)
    dx = model.backward(dy)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-6)
    grads = {f"rnn.{k}": p.grad for k, p in rnn.named_parameters()} | {f"fc.{k}": p.grad for k, p in fc.named_parameters()}
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, grads[name].numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_digits_rnn_quantizes_dynamically_and_round_trips_through_a_model_file(tmp_path):
    model = models.digits_rnn("LSTM", 5, rng=np.random.default_rng(0)).eval()
    x = np.random.default_rng(1).standard_normal((4, 1, 8, 8)).astype(np.float32)
    io.save(model, tmp_path / "f.npz")
    np.testing.assert_array_equal(io.load(tmp_path / "f.npz")(x), model(x))
    q = quant.quantize_dynamic(model)
    assert [type(m).__name__ for m in (q.rnn, q.fc)] == ["DynamicQuantizedLSTM", "DynamicQuantizedLinear"]
    io.save(q, tmp_path / "q.npz")
    np.testing.assert_array_equal(io.load(tmp_path / "q.npz")(x), q(x))
    assert np.abs(q(x) - model(x)).max() < 0.05
    with pytest.raises(ValueError, match="mode must be one of"):
        models.digits_rnn("TCN")


def test_a_cnn_distills_into_a_gru_with_kd_and_a_hint_on_the_final_hidden_state():
    """KD plus a FitNets hint between the GRU's final hidden state ('final') and the CNN's hidden features."""
    from minicompress.data import load_digits
    from minicompress.distill import Distiller, HintLoss, KDLoss
    from minicompress.optim import Adam

    x, y, _, _ = load_digits()
    x, y = x[:256], y[:256]
    teacher = models.digits_cnn((4, 8), 16, rng=np.random.default_rng(0)).eval()
    student = models.digits_rnn("GRU", 8, rng=np.random.default_rng(1))
    d = Distiller(KDLoss(T=2.0, alpha=0.5), feature_loss=HintLoss(8, 16, conv=False), student_layer="final",
                  teacher_layer="9", epochs=3, batch_size=64, quiet=True, rng=0,
                  optimizer=lambda p: Adam(p, lr=1e-2)).fit(student, x, y, teacher=teacher)
    losses = d.history_[0]["loss"]
    assert losses[-1] < losses[0]
    assert d.student_ is student and np.isfinite(losses).all()
