"""The main job with the real architectures: a recipe names teacher and student architectures."""
import numpy as np
import pytest

from minicompress import io, nn, pipeline
from minicompress.recipe import validate_recipe


def _tiny(arch_teacher, arch_student, quant_mode, **prune):
    recipe = {
        "teacher": {"arch": arch_teacher, "epochs": 1, "hidden": 32, "resnet": {"depth": 20}},
        "student": {"arch": arch_student, "epochs": 1, "hidden": 16, "channels": [4, 8],
                    "vit": {"patch_size": 4, "num_layers": 1, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 16}},
        "prune": {"epochs": 1, "sparsity": 0.0, **prune},
        "quant": {"mode": quant_mode, "calibration_batches": 2},
    }
    return validate_recipe(recipe)


def test_mlp_teacher_vit_student_heads_pruned_and_dynamic_int8(tmp_path):
    report = pipeline.run(_tiny("mlp", "vit", "dynamic", heads=0.5, channel_amount=0.25), tmp_path, quiet=True,
                          log=lambda _: None)
    stages = {s["stage"]: s for s in report["stages"]}
    assert list(stages) == ["teacher", "student", "pruned", "int8"]
    pruned = io.load(tmp_path / stages["pruned"]["file"])
    attention = pruned.encoder.layers.encoder_layer_0.self_attention
    assert attention.num_heads == 1 and pruned.encoder.layers.encoder_layer_0.mlp[0].out_features == 12
    assert stages["pruned"]["params"] < stages["student"]["params"]
    int8 = io.load(tmp_path / stages["int8"]["file"])
    assert type(int8.heads.head).__name__ == "DynamicQuantizedLinear"
    assert type(int8.encoder.layers.encoder_layer_0.self_attention.out_proj).__name__ == "NonDynamicallyQuantizableLinear"


def test_resnet_teacher_cnn_student_through_static_int8(tmp_path):
    recipe = _tiny("resnet", "cnn", "ptq", channel_amount=0.5, round_to=2)
    recipe["student"]["enabled"] = False          # the ResNet itself is pruned and quantized
    report = pipeline.run(recipe, tmp_path, quiet=True, log=lambda _: None)
    stages = {s["stage"]: s for s in report["stages"]}
    assert list(stages) == ["teacher", "pruned", "int8"]
    pruned = io.load(tmp_path / stages["pruned"]["file"])
    assert pruned.conv1.out_channels == 8 and pruned.layer3[0].conv1.out_channels == 32
    int8 = io.load(tmp_path / stages["int8"]["file"]).eval()
    assert type(int8.layer1[0].add_relu).__name__ == "QFunctional"
    assert stages["int8"]["bytes_on_disk"] * 2 < stages["pruned"]["bytes_on_disk"]     # small layers: qparams weigh


def test_vit_on_images_it_cannot_patch_is_refused_by_key():
    with pytest.raises(ValueError, match=r"student.arch = 'vit': arch 'vit' needs square images divisible by"):
        cfg = _tiny("mlp", "vit", "dynamic")["student"]
        cfg["vit"]["patch_size"] = 3
        data = (np.zeros((4, 1, 8, 8), np.float32), np.arange(4), np.zeros((2, 1, 8, 8), np.float32), np.arange(2))
        pipeline.build_model(cfg, "student", data, np.random.default_rng(0))


def test_static_int8_of_an_mlp_fuses_linear_bn_and_leaves_the_relu():
    """arch = 'mlp' with static PTQ used to fail: 'cannot fuse [Linear, BatchNorm1d, ReLU]' (PyTorch has no such
    fusion either); the run fuses Linear-BN and quantizes the ReLU on its own."""
    from minicompress import models, quant
    from minicompress.pipeline import _fusion_groups
    from calibration import calibrated_int8
    mlp = models.digits_mlp((16, 8), rng=np.random.default_rng(0)).eval()
    groups = _fusion_groups(mlp)
    assert groups == [["1", "2"], ["4", "5"]]
    model = nn.Sequential(quant.QuantStub(), *quant.fuse_modules(mlp, groups), quant.DeQuantStub()).eval()
    x = np.random.default_rng(1).standard_normal((32, 1, 8, 8)).astype(np.float32)
    int8 = calibrated_int8(model, x)
    assert np.abs(int8(x) - mlp(x)).max() < 0.2 * np.abs(mlp(x)).max()
