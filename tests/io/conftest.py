"""Fixtures shared by the tests/io files."""
import pytest

from minicompress.io.registry import _REGISTERED


@pytest.fixture
def registry():
    """Registrations made by a test are undone after it."""
    before = dict(_REGISTERED)
    yield _REGISTERED
    _REGISTERED.clear()
    _REGISTERED.update(before)
