"""The fused residual/gradient kernel behind the Adam solver and the final reports."""

import numpy as np
import pytest

import fastfp
from fastfp.backends import get_kernels


@pytest.mark.parametrize("cell", fastfp.CELLS)
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_residual_grad_is_the_gradient_of_q(cell, backend):
    params = fastfp.RNNParams.random(cell, 6, 3, seed=2, scale=0.8)
    rng = np.random.default_rng(0)
    h = rng.uniform(-0.8, 0.8, (4, params.state_size))
    x = rng.normal(size=(1, 3))
    r, g = get_kernels(backend).residual_grad(params.cell_code, 0, h, x, *params.arrays(np.float64))
    F = fastfp.step(params, h, x[0], backend="numpy")
    np.testing.assert_allclose(r, F - h, atol=1e-14)

    def q(states):
        res = fastfp.step(params, states, x[0], backend="numpy") - states
        return 0.5 * (res ** 2).sum(axis=1)

    eps = 1e-6
    fd = np.empty_like(h)
    for i in range(h.shape[1]):
        e = np.zeros_like(h)
        e[:, i] = eps
        fd[:, i] = (q(h + e) - q(h - e)) / (2 * eps)
    np.testing.assert_allclose(g, fd, atol=1e-8)
