"""Test-wide settings: hypothesis profile, and the PyTorch-oracle rule.

Parity tests get PyTorch through the ``torch`` fixture (or ``pytest.importorskip('torch')``).
With ``MINICOMPRESS_REQUIRE_TORCH=1`` (set by ``.ci/run``) a skipped test is a failed test, so
CI can never pass with the oracle silently missing; the oracle must also be exactly 2.13.0. The one
exception is a test marked ``@pytest.mark.cpu("avx512vnni")``: it runs instructions this CPU may lack, and
is skipped (by name of the feature) where it does.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", max_examples=25, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REQUIRE_TORCH = os.environ.get("MINICOMPRESS_REQUIRE_TORCH", "") not in ("", "0")
TORCH_VERSION = "2.13.0"


@pytest.fixture(scope="session")
def torch():
    """PyTorch 2.13.0 as the test oracle, single-threaded and float32 by default, fbgemm engine."""
    torch = pytest.importorskip("torch")
    if not torch.__version__.startswith(TORCH_VERSION):
        pytest.skip(f"the oracle is torch=={TORCH_VERSION}, found {torch.__version__}")
    torch.set_num_threads(1)
    torch.backends.quantized.engine = "fbgemm"
    return torch


def pytest_configure(config):
    config.addinivalue_line("markers", "cpu(feature): needs an x86 feature (an LLVM name, e.g. avx512vnni) "
                                       "to run; skipped on a CPU without it, even under MINICOMPRESS_REQUIRE_TORCH")


def pytest_runtest_setup(item):
    from minicompress.quant import host
    for mark in item.iter_markers("cpu"):
        if not host.FEATURES.get(mark.args[0], False):
            pytest.skip(f"this CPU lacks {mark.args[0]}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_TORCH and report.skipped and item.get_closest_marker("cpu") is None:
        report.outcome = "failed"
        report.longrepr = f"skipped under MINICOMPRESS_REQUIRE_TORCH=1 (oracle must run): {report.longrepr}"


@pytest.fixture
def rng():
    return np.random.default_rng(0)
