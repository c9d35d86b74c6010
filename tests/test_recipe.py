import pytest

from minicompress.recipe import RecipeError, default_recipe, load_recipe


def _write(tmp_path, text):
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_default_recipe_is_complete_and_partial_recipes_merge(tmp_path):
    assert load_recipe() == default_recipe()
    recipe = load_recipe(_write(tmp_path, "[student]\nalpha = 1\n[quant]\nmode = 'qat'\n"))
    assert recipe["student"]["alpha"] == 1.0 and isinstance(recipe["student"]["alpha"], float)
    assert recipe["quant"]["mode"] == "qat"
    assert recipe["teacher"] == default_recipe()["teacher"]


@pytest.mark.parametrize("text, message", [
    ("[prune]\nsparsityy = 0.5\n", "unknown key 'prune.sparsityy'"),
    ("[bogus]\nx = 1\n", "unknown key 'bogus'"),
    ("[prune]\nsparsity = 'high'\n", "prune.sparsity: expected a number, got 'high'"),
    ("[teacher]\nepochs = 2.5\n", "teacher.epochs: expected an integer, got 2.5"),
    ("[student]\nenabled = 1\n", "student.enabled: expected a boolean, got 1"),
    ("[student]\nchannels = [1, 2, 3]\n", "student.channels: expected a list of 2 items"),
    ("[student]\nalpha = 1.5\n", r"student.alpha: expected a number in \[0, 1\], got 1.5"),
    ("[quant]\nmode = 'int4'\n", "quant.mode: expected 'ptq', 'qat' or 'dynamic'"),
    ("[teacher]\narch = 'vgg'\n", "teacher.arch: expected one of 'cnn'"),
    ("[student.resnet]\ndepth = 21\n", "student.resnet.depth: expected one of 18, 20"),
    ("[student]\narch = 'vit'\n", "quant.mode: a 'vit' model is quantized with mode = 'dynamic'"),
    ("[student.vit]\nnum_heads = 0\n", r"student.vit.num_heads: expected integers in \[1, 64\]"),
    ("teacher = 3\n", "teacher must be a table"),
    ("[teacher\n", "not valid TOML"),
])
def test_bad_recipes_name_the_key(tmp_path, text, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(_write(tmp_path, text))


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.toml")


def test_shipped_recipes_load():
    from pathlib import Path
    import minicompress
    from minicompress.sweep import load_sweep
    for path in (Path(minicompress.__file__).parent / "recipes").glob("*.toml"):
        load_sweep(path) if path.stem.startswith("sweep") else load_recipe(path)
