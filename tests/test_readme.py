"""The README's Python examples run as written, in order, sharing one namespace like a notebook
(except the one that needs the user's own .pt file; tests/test_cli.py covers that case end to end)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = [block for block in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
          if "on the training machine" not in block]


def test_readme_examples_run_in_order(tmp_path, monkeypatch, capsys):
    assert len(BLOCKS) >= 5
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    for index, code in enumerate(BLOCKS):
        exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    assert "[4 0 7] [ 0.5 -1.5  2. ]" in capsys.readouterr().out     # the quantization example's printed result


def test_ci_runs_the_readmes_test_command_and_it_takes_cpu_torch():
    """.ci/run runs the README's second set-up command verbatim; that command installs PyTorch's CPU build
    from PyTorch's index first (PyPI's torch==2.13.0 is the CUDA build on Linux x86)."""
    bash = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    test_command = bash[1].strip()
    ci = (README.parent / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()
    assert test_command.startswith("pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu && ")
