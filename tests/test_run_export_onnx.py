"""minicompress run --export-onnx: the final stage also as ONNX, run by onnxruntime."""
import json
from pathlib import Path

import numpy as np
import pytest

from minicompress import io, nn, pipeline
from minicompress.cli import main
from minicompress.data import load_digits
from test_cli import TINY


@pytest.mark.parametrize("int8_format", ["qdq", "qoperator"])
def test_run_exports_the_final_int8_model_that_onnxruntime_runs(tmp_path, int8_format):
    ort = pytest.importorskip("onnxruntime")
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY.replace("[prune]\nepochs = 1", "[prune]\nenabled = false"))
    out = tmp_path / "run"
    code = main(["run", "--recipe", str(recipe), "--out", str(out), "--quiet", "--export-onnx", int8_format])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["onnx"] == "final.onnx" and "final.onnx" in report["files"] and report["onnx_error"] is None
    int8 = io.load(out / report["stages"][-1]["file"])
    x = load_digits()[2][:64]
    session = ort.InferenceSession(str(out / "final.onnx"), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {session.get_inputs()[0].name: x})[0]
    ours = int8(x)
    assert theirs.shape == ours.shape
    assert (theirs.argmax(1) == ours.argmax(1)).mean() >= 0.95      # onnxruntime's arithmetic, not PyTorch's
    assert np.abs(theirs - ours).max() <= 0.05 * np.abs(ours).max()


def test_a_final_model_the_exporter_refuses_keeps_the_run_and_says_why(tmp_path):
    pytest.importorskip("onnx")
    report, lines = {}, []
    refused = nn.Sequential(nn.Flatten(1, 2), nn.GRU(8, 4, batch_first=True))
    pipeline._export_final(report, refused, Path(tmp_path), np.zeros((2, 1, 8, 8), np.float32), "qdq", lines.append)
    assert report["onnx"] is None and "GRU" in report["onnx_error"]
    assert "NOT written" in lines[0] and not (tmp_path / "final.onnx").exists()
