# quadra.lanczos, cg, hutchinson_trace and slq_density against dense linear algebra and SciPy.
import numpy as np
import pytest
from scipy.sparse.linalg import LinearOperator, eigsh

import quadra


@pytest.fixture
def batch(model, data):
    return model.bind(*data, precision="float64")


def dense(C):
    return C @ np.eye(C.shape[0])


def test_lanczos_equals_eigsh_on_the_linear_operator_and_dense_eigenvalues(batch):
    G = batch.curvature("ggn")
    result = quadra.lanczos(G, 4, tolerance=1e-10)
    assert result.converged and result.stop in ("converged", "space-exhausted")
    values, vectors = result  # unpacks as (eigenvalues, eigenvectors)
    assert values.shape == (4,) and vectors.shape == (G.shape[0], 4)
    assert np.all(np.diff(values) <= 0)  # descending

    op = G.as_linear_operator()
    assert isinstance(op, LinearOperator) and op.shape == G.shape and op.dtype == np.float64
    scipy_values = np.sort(eigsh(op, k=4, which="LA", tol=1e-12)[0])[::-1]
    np.testing.assert_allclose(values, scipy_values, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(values, np.linalg.eigvalsh(dense(G))[::-1][:4], rtol=1e-9)
    # Eigenvectors: orthonormal and C y = theta y.
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(4), atol=1e-10)
    np.testing.assert_allclose(G @ vectors, vectors * values, atol=1e-8 * values[0])


def test_lanczos_smallest_of_the_hessian(batch):
    H = batch.curvature("hessian")
    bottom = quadra.lanczos(H, 2, which="smallest", tolerance=1e-10).eigenvalues
    np.testing.assert_allclose(bottom, np.linalg.eigvalsh(dense(H))[:2], rtol=1e-8, atol=1e-12)


def test_scipy_solvers_run_on_the_linear_operator(batch):
    from scipy.sparse.linalg import cg as scipy_cg
    from scipy.sparse.linalg import minres

    op = batch.curvature("ggn").as_linear_operator()
    damped = op + 0.5 * LinearOperator(op.shape, matvec=lambda x: x, dtype=np.float64)
    b = np.random.default_rng(1).standard_normal(op.shape[0])
    for solver in (scipy_cg, minres):
        x, info = solver(damped, b, tol=1e-12, maxiter=500, **({"atol": 0} if solver is scipy_cg else {}))
        assert info == 0
        np.testing.assert_allclose(damped @ x, b, atol=1e-8)
    # matmat and a float32 operator.
    V = np.random.default_rng(2).standard_normal((op.shape[0], 2))
    np.testing.assert_allclose(op.matmat(V), np.column_stack([op @ V[:, 0], op @ V[:, 1]]), atol=1e-14)
    assert batch.curvature("ggn").as_linear_operator().dtype == np.float64


def test_cg_solves_the_damped_system(batch):
    G = batch.curvature("ggn")
    g = batch.gradient()
    result = quadra.cg(G, -g, damping=0.1, tolerance=1e-12, max_iterations=500)
    assert result.termination == "converged"
    assert result.num_products == result.iterations
    np.testing.assert_allclose(G @ result.x + 0.1 * result.x, -g, atol=1e-10)
    assert len(result.quadratic) == result.iterations + 1
    assert result.quadratic[-1] < 0  # phi decreases from phi(x_0) = 0
    # A warm start at the solution converges at once; the iteration cap is reported.
    warm = quadra.cg(G, -g, damping=0.1, tolerance=1e-6, x0=result.x)
    assert warm.iterations == 0
    capped = quadra.cg(G, -g, damping=0.1, tolerance=1e-14, max_iterations=2)
    assert capped.termination == "max-iterations" and capped.iterations == 2


def test_cg_reports_negative_curvature_as_an_outcome(batch):
    H = batch.curvature("hessian")
    lowest = np.linalg.eigvalsh(dense(H))[0]
    assert lowest < 0  # this small tanh network is not convex at its initialisation
    b = np.random.default_rng(3).standard_normal(H.shape[0])
    result = quadra.cg(H, b, damping=0.0, tolerance=1e-14, max_iterations=500)
    assert result.termination == "negative-curvature"
    assert result.negative_curvature <= 0


def test_hutchinson_trace_and_slq_density(batch):
    D = batch.curvature("diag-ggn")
    trace = quadra.hutchinson_trace(D, probes=3, seed=1)
    # Rademacher probes make the estimate exact for a diagonal matrix.
    np.testing.assert_allclose(trace.mean, batch.diagonal("ggn").sum(), rtol=1e-12)
    assert trace.num_products == 3 and len(trace.samples) == 3
    G = batch.curvature("ggn")
    estimate = quadra.hutchinson_trace(G, probes=200, seed=2)
    exact = np.trace(dense(G))
    assert abs(estimate.mean - exact) < 5 * estimate.standard_error + 1e-12
    density = quadra.slq_density(G, probes=4, steps=30, seed=2, points=200)
    assert density.x.shape == density.density.shape == (200,)
    integral = np.sum(density.density) * (density.x[1] - density.x[0])
    assert abs(integral - 1) < 1e-3
    np.testing.assert_allclose(sum(density.weights), 1.0, rtol=1e-12)


def test_lanczos_argument_errors(batch):
    G = batch.curvature("ggn")
    P = G.shape[0]
    with pytest.raises(quadra.Error, match=rf"lanczos: k = 0 must be in \[1, {P}\]"):
        quadra.lanczos(G, 0)
    with pytest.raises(quadra.Error, match="which='top'; expected 'largest' or 'smallest'"):
        quadra.lanczos(G, 1, which="top")
    with pytest.raises(quadra.Error, match="max_products = 2 is smaller than k = 3"):
        quadra.lanczos(G, 3, max_products=2)
    with pytest.raises(quadra.Error, match="b: array has shape"):
        quadra.cg(G, np.zeros(3))


def test_gram_eigenpairs_equal_lanczos_and_the_exact_trace(model, data):
    batch = model.bind(*data, precision="float64")
    G = batch.curvature("ggn")
    result = quadra.gram_eigenpairs(batch, 3, tolerance=1e-12)
    assert result.converged
    values, vectors = result
    np.testing.assert_allclose(values, quadra.lanczos(G, 3, tolerance=1e-12).eigenvalues, rtol=1e-9)
    np.testing.assert_allclose(G @ vectors, vectors * values, atol=1e-9 * values[0])
    np.testing.assert_allclose(result.trace, np.trace(dense(G)), rtol=1e-12)
    assert result.gram_size == data[0].shape[0] * (model.num_outputs - 1)  # cross-entropy
    conv = quadra.Model("conv(2,3) flatten linear(3)", input_shape=(1, 4, 4))
    conv_batch = conv.bind(np.zeros((2, 1, 4, 4)), np.array([0, 1]))
    with pytest.raises(quadra.Error, match="Linear"):
        quadra.gram_eigenpairs(conv_batch, 1)
