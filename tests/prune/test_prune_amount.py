"""amount -> count, and the validation errors, exactly as torch.nn.utils.prune."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minicompress import prune
from minicompress.prune.amount import count_to_prune, validate_amount, validate_count


@pytest.mark.parametrize("amount, n, k", [(0.25, 10, 2), (0.35, 10, 4), (0.15, 10, 2), (0.5, 5, 2),
                                          (0.45, 10, 4), (0.3, 7, 2), (1, 10, 1), (1.0, 10, 10), (0, 3, 0)])
def test_documented_counts(amount, n, k):
    assert count_to_prune(amount, n) == k


@given(st.floats(0, 1), st.integers(0, 10_000))
def test_fraction_count_is_python_round_of_the_double_product(amount, n):
    assert count_to_prune(amount, n) == round(amount * n)


def test_count_matches_torch(torch):
    from torch.nn.utils.prune import _compute_nparams_toprune
    rng = np.random.default_rng(1)
    for amount, n in zip(rng.uniform(0, 1, 300).round(2), rng.integers(1, 60, 300)):
        assert count_to_prune(float(amount), int(n)) == _compute_nparams_toprune(float(amount), int(n))


BAD_AMOUNTS = [-0.1, 1.5, -1, "0.5", None, [0.5], float("inf")]


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
def test_init_errors_have_torchs_types(torch, amount):
    from torch.nn.utils import prune as tprune
    with pytest.raises(Exception) as theirs:
        tprune.L1Unstructured(amount)
    with pytest.raises(type(theirs.value)):
        validate_amount(amount)
    with pytest.raises(type(theirs.value)):
        prune.L1Unstructured(amount)
    with pytest.raises(type(theirs.value)):
        prune.LnStructured(amount, 2, 0)


def test_int_larger_than_tensor_is_value_error_float_one_prunes_all(torch):
    from torch.nn.utils import prune as tprune
    t = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    with pytest.raises(ValueError):
        tprune.L1Unstructured(7).compute_mask(torch.from_numpy(t), torch.ones(2, 3))
    with pytest.raises(ValueError):
        prune.L1Unstructured(7).compute_mask(t, np.ones_like(t))
    with pytest.raises(ValueError):
        prune.LnStructured(3, 2, dim=0).compute_mask(t, np.ones_like(t))
    assert not prune.L1Unstructured(1.0).compute_mask(t, np.ones_like(t)).any()
    assert prune.L1Unstructured(1).compute_mask(t, np.ones_like(t)).sum() == 5
    validate_count(6, 6)
    validate_count(0.9, 1)


def test_structured_shape_and_dim_errors(torch):
    from torch.nn.utils import prune as tprune
    cases = [(np.ones(5, np.float32), 0), (np.ones((2, 3), np.float32), 2), (np.ones((2, 3), np.float32), -3)]
    for t, dim in cases:
        with pytest.raises(Exception) as theirs:
            tprune.LnStructured(0.5, 2, dim).compute_mask(torch.from_numpy(t), torch.ones(t.shape))
        for method in (prune.LnStructured(0.5, 2, dim), prune.RandomStructured(0.5, dim)):
            with pytest.raises(type(theirs.value)):
                method.compute_mask(t, np.ones_like(t))
