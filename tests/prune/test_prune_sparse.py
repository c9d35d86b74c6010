"""The CSR kernel equals its NumPy twin bit for bit, and SparseLinear equals the masked Linear."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minicompress.nn as mnn
from minicompress import prune
from minicompress.prune.kernels import csr_matmul, csr_matmul_reference, dense_to_csr


@given(st.integers(1, 5), st.integers(1, 12), st.integers(1, 12), st.floats(0, 1), st.integers(0, 2**31 - 1),
       st.sampled_from([np.float32, np.float64]))
def test_kernel_is_its_twin_bit_for_bit(b, m, k, sparsity, seed, dtype):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((m, k)) * (rng.random((m, k)) >= sparsity)).astype(dtype)
    x = rng.standard_normal((b, k)).astype(dtype)
    csr = dense_to_csr(w)
    assert csr[0][-1] == np.count_nonzero(w) and csr[2].dtype == dtype
    y = csr_matmul(x, *csr)
    assert y.dtype == dtype and y.tobytes() == csr_matmul_reference(x, *csr).tobytes()
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-5, atol=1e-5)


def test_sparse_linear_from_a_pruned_linear():
    lin = mnn.Linear(40, 30, rng=0)
    prune.l1_unstructured(lin, "weight", 0.9)
    prune.l1_unstructured(lin, "bias", 3)
    sparse = prune.SparseLinear.from_dense(lin)
    assert sparse.nnz == 120 and "nnz=120" in repr(sparse)
    np.testing.assert_array_equal(sparse.to_dense(), lin.weight)
    x = np.random.default_rng(1).standard_normal((7, 40)).astype(np.float32)
    np.testing.assert_allclose(sparse(x), lin(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"expected input \(N, 40\)"):
        sparse(x[:, :5])
    with pytest.raises(NotImplementedError):
        sparse.backward(np.ones((7, 30), np.float32))
    no_bias = prune.SparseLinear(np.eye(3, dtype=np.float32))
    np.testing.assert_array_equal(no_bias(np.ones((1, 3), np.float32)), np.ones((1, 3)))
    with pytest.raises(ValueError, match="2-D"):
        dense_to_csr(np.ones(3))
