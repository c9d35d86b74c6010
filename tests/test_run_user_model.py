"""`minicompress run --model FILE [--arch NAME]`: the user's model (ONNX, model file, state dict) is the teacher."""
import json
import warnings

import numpy as np
import pytest

from minicompress import io, metrics, models, train
from minicompress.cli import main
from minicompress.recipe import load_recipe
from minicompress.user_model import load_user_model
from tests.test_cli import TINY as CLI_TINY

TINY = CLI_TINY.replace("epochs = 2", "epochs = 1")      # test_cli's tiny recipe, one epoch a stage


@pytest.fixture
def user_data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 48)
    y[:3] = [0, 1, 2]
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x[:32], y_train=y[:32], x_test=x[32:], y_test=y[32:])
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY)
    return path, recipe, (x[:32], y[:32], x[32:], y[32:])


def test_run_with_an_onnx_model_as_the_teacher(torch, tmp_path, user_data):
    pytest.importorskip("onnx")
    data_path, recipe, data = user_data
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(6 * 16, 3)).eval()
    onnx_path = tmp_path / "mine.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 1, 8, 8),), str(onnx_path), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "N"}})
    out = tmp_path / "out"
    assert main(["run", "--recipe", str(recipe), "--data", str(data_path), "--model", str(onnx_path), "--out",
                 str(out), "--quiet", "--json"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == ["teacher", "student", "pruned", "int8"]
    with torch.no_grad():
        expected = net(torch.from_numpy(data[2])).numpy().argmax(1)
    teacher = report["stages"][0]
    assert teacher["accuracy"] == pytest.approx(metrics.accuracy(data[3], expected))    # evaluated, not trained
    assert teacher["params"] == sum(p.numel() for p in net.parameters())
    assert type(io.load(out / "0_teacher.npz")).__name__ == "GraphModule"


def test_run_with_a_state_dict_and_its_arch(tmp_path, user_data, capsys):
    data_path, recipe, data = user_data
    native = models.build("cnn", 3, (1, 8, 8), channels=(8, 16), hidden=32, rng=0)
    io.save_state_dict_file(native.state_dict(), tmp_path / "sd.npz")
    assert main(["run", "--recipe", str(recipe), "--data", str(data_path), "--model", str(tmp_path / "sd.npz"),
                 "--out", str(tmp_path / "o")]) == 1
    assert "is a state dict: give its architecture with --arch" in capsys.readouterr().err
    cfg = load_recipe(str(recipe))["teacher"]
    model = load_user_model(str(tmp_path / "sd.npz"), "cnn", cfg, data)
    np.testing.assert_array_equal(train.predict(model, data[2]), train.predict(native, data[2]))
    io.save(native, tmp_path / "model.npz")                      # a minicompress model file needs no --arch
    np.testing.assert_array_equal(train.predict(load_user_model(str(tmp_path / "model.npz"), None, cfg, data),
                                                data[2]), train.predict(native, data[2]))
    recipe.write_text(TINY.replace("[prune]\nepochs = 1", "[prune]\nenabled = false"))
    assert main(["run", "--recipe", str(recipe), "--data", str(data_path), "--model", str(tmp_path / "sd.npz"),
                 "--arch", "cnn", "--out", str(tmp_path / "o"), "--quiet"]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["stages"][0]["accuracy"] == pytest.approx(
        metrics.accuracy(data[3], train.predict(native, data[2]).argmax(1)))


def test_a_torch_resnet18_state_dict_reads_its_classes_and_stem(torch, tmp_path):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent / "models"))
    from torch_twins import resnet_twin
    twin = resnet_twin(torch, "basic", [2, 2, 2, 2], num_classes=7).eval()
    torch.save(twin.state_dict(), tmp_path / "r18.pt")
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    data = (x, np.array([0, 1, 2, 3]), x, np.array([0, 1, 2, 3]))
    cfg = load_recipe(None)["teacher"]
    model = load_user_model(str(tmp_path / "r18.pt"), "resnet18", cfg, data)
    assert model.fc.out_features == 7 and model.conv1.kernel_size == (7, 7)
    with torch.no_grad():
        np.testing.assert_allclose(train.predict(model, x), twin(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-4)


def test_data_that_does_not_fit_the_model_is_refused_clearly(tmp_path, user_data):
    _, recipe, data = user_data
    native = models.build("cnn", 2, (1, 8, 8), channels=(8, 16), hidden=32, rng=0)
    io.save(native, tmp_path / "m.npz")
    cfg = load_recipe(str(recipe))["teacher"]
    with pytest.raises(ValueError, match=r"gives outputs of shape \(2, 2\).*K >= its 3 classes"):
        load_user_model(str(tmp_path / "m.npz"), None, cfg, data)
    wide = (np.zeros((4, 3, 8, 8), np.float32),) + data[1:]
    with pytest.raises(ValueError, match=r"does not accept the data's images of shape \(3, 8, 8\)"):
        load_user_model(str(tmp_path / "m.npz"), None, cfg, wide)
