"""On a CPU with AVX-512 VNNI the suite runs the VNNI micro-kernel; the AVX2 one (``quant/avx2.py``: its register-
stored epilogues and the implicit-GEMM convolution for codes <= 128) is what a CPU with AVX2 only runs. Here the
kernel, convolution and int8-plan tests run once more in a child process with ``MINICOMPRESS_VNNI=0`` and a Numba
cache of its own (``NUMBA_CACHE_DIR``, so the two settings' machine code never mix), so CI on a VNNI machine
checks the AVX2 paths too. On a CPU without VNNI the suite itself runs them."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ("tests/quant/test_quant_kernels.py", "tests/quant/test_conv_implicit.py",
          "tests/quant/test_int16_pairs.py", "tests/quant/test_quant_functional.py",
          "tests/inference/test_plan.py")


@pytest.mark.cpu("avx512vnni")
@pytest.mark.cpu("avx2")
def test_the_avx2_kernels_pass_the_kernel_conv_and_plan_tests(tmp_path):
    env = dict(os.environ, MINICOMPRESS_VNNI="0", NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    probe = subprocess.run([sys.executable, "-c", "from minicompress.quant import avx2, vnni; "
                            "print(vnni.USE_VNNI, avx2.USE_AVX2)"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert probe.stdout.split() == ["False", "True"], probe.stdout + probe.stderr
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CHECKS],
                         env=env, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout.splitlines()[-1], run.stdout[-2000:]
