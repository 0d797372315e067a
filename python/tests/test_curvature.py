# The engine's quantities and the curvature plugins against PyTorch autograd, in float64.
import numpy as np
import pytest

import quadra
from conftest import CLASSES, N, TorchReference

TOL = 1e-10


def close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOL * max(1.0, np.abs(expected).max()))


@pytest.fixture
def batch(model, data):
    return model.bind(*data, precision="float64")


@pytest.fixture
def vectors(model):
    """Three vectors as the columns of a Fortran-ordered block, so each column is contiguous."""
    return np.asfortranarray(np.random.default_rng(7).standard_normal((model.num_parameters, 3)))


def test_loss_gradient_and_per_sample_gradients(batch, reference):
    assert batch.dtype == np.float64
    assert batch.batch_size == N and batch.num_outputs == CLASSES
    assert abs(batch.loss() - reference.loss()) <= TOL
    np.testing.assert_allclose(batch.outputs(), reference.outputs().numpy(), rtol=0, atol=1e-13)
    close(batch.gradient(), reference.gradient())
    per_sample = batch.per_sample_gradients()
    assert per_sample.shape == (N, batch.num_parameters)
    close(per_sample, reference.per_sample_gradients())
    close(batch.per_sample_losses().mean(), reference.loss())


def test_jvp_and_vjp_match_autograd(model, batch, reference, vectors):
    torch = pytest.importorskip("torch")
    v = vectors[:, 0]
    jv = torch.autograd.functional.jvp(reference.outputs, reference.theta, torch.from_numpy(v))[1]
    close(batch.jvp(v), jv.numpy())
    U = np.random.default_rng(8).standard_normal((N, CLASSES))
    vjp = torch.autograd.functional.vjp(reference.outputs, reference.theta, torch.from_numpy(U))[1]
    close(batch.vjp(U), vjp.numpy())
    with pytest.raises(quadra.Error, match=r"U: output cotangents have shape \(3,\); expected "
                                           r"\(16, 3\)"):
        batch.vjp(np.zeros(3))


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
def test_curvature_products_and_diagonals_match_autograd(model, data, vectors, loss):
    X, labels = data
    y = labels if loss == "cross-entropy" else np.random.default_rng(2).standard_normal((N, CLASSES))
    reference = TorchReference(model, X, y, loss)
    batch = model.bind(X, y, loss=loss, precision="float64")
    dense = {"ggn": reference.ggn(), "hessian": reference.hessian(),
             "empirical-fisher": reference.empirical_fisher()}
    v = vectors[:, 0]
    for name, matrix in dense.items():
        C = batch.curvature(name)
        assert C.shape == (model.num_parameters, model.num_parameters)
        assert C.dtype == np.float64 and C.structure == "matrix-free"
        close(C @ v, matrix @ v)
        close(C @ np.ascontiguousarray(vectors), matrix @ vectors)  # a C-ordered block
        close(C @ vectors, matrix @ vectors)  # used in place
    close(batch.diagonal("ggn"), np.diag(dense["ggn"]))
    close(batch.diagonal("ef"), np.diag(dense["empirical-fisher"]))
    close(batch.curvature("diag-ggn").diagonal(), np.diag(dense["ggn"]))
    close(batch.curvature("diag-ef") @ v, np.diag(dense["empirical-fisher"]) * v)


def test_float32_batch_agrees_with_float64(model, data, vectors):
    b32 = model.bind(*data)  # float32 is the default, as on the command line
    b64 = model.bind(*data, precision="float64")
    assert b32.dtype == np.float32
    G32, G64 = b32.curvature("ggn"), b64.curvature("ggn")
    assert G32.dtype == np.float32
    v = vectors[:, 0]
    out = G32 @ v  # a float64 vector is converted for a float32 operator
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, G64 @ v, rtol=0, atol=1e-5)
    np.testing.assert_allclose(b32.gradient(), b64.gradient(), rtol=0, atol=1e-6)


def test_mc_fisher_is_seeded_and_operators_of_one_batch_stay_independent(batch, vectors):
    v = vectors[:, 0]
    a = batch.curvature("mc-fisher", seed=1, samples=4)
    first = a @ v
    np.testing.assert_array_equal(a @ v, first)  # a fixed matrix once drawn
    b = batch.curvature("mc-fisher", seed=2, samples=4)  # draws other labels on the same batch
    other = b @ v
    assert not np.allclose(other, first)
    np.testing.assert_array_equal(a @ v, first)  # a still uses its own labels
    np.testing.assert_array_equal(b @ v, other)
    # MC-Fisher is an unbiased estimate of the GGN for cross-entropy: with many samples close.
    many = batch.curvature("mc-fisher", seed=3, samples=1000) @ v
    ggn = batch.curvature("ggn") @ v
    assert np.linalg.norm(many - ggn) < 0.1 * np.linalg.norm(ggn)


def test_kfac_factors_operator_and_solve(model, batch, vectors):
    factors = batch.kfac_factors()
    assert [(f["layer"], f["weight"], f["bias"]) for f in factors] == [
        (0, "0.weight", "0.bias"), (2, "2.weight", "2.bias")]
    assert factors[0]["a"].shape == (model.input_shape[0] + 1,) * 2  # bias-augmented
    assert factors[1]["s"].shape == (CLASSES, CLASSES)
    K = batch.curvature("kfac")
    assert K.structure == "kronecker"
    v = vectors[:, 0]
    # The operator is block-diagonal with blocks kron(S, A) over [W b] (row-major).
    expected, offset = np.zeros_like(v), 0
    for f in factors:
        out_features, width = f["s"].shape[0], f["a"].shape[0]
        size = out_features * width
        block = np.kron(f["s"], f["a"])
        # [W b]: W row-major then b; reorder v into the rows of [W b].
        W = v[offset:offset + out_features * (width - 1)].reshape(out_features, width - 1)
        b = v[offset + out_features * (width - 1):offset + size]
        Wb = np.hstack([W, b[:, None]]).ravel()
        r = (block @ Wb).reshape(out_features, width)
        expected[offset:offset + size] = np.concatenate([r[:, :-1].ravel(), r[:, -1]])
        offset += size
    close(K @ v, expected)
    # solve is the inverse of C + lam I.
    lam = 0.1
    x = K.solve(lam, v)
    close(K @ x + lam * x, v)
    # Plugin options as keyword arguments.
    mc = batch.curvature("kfac", type="mc", mc_samples=2, seed=5)
    assert not np.allclose(mc @ v, K @ v)


def test_solve_is_refused_by_matrix_free_plugins(batch, vectors):
    with pytest.raises(quadra.Error, match="ggn is matrix-free: solve with CG or MINRES instead"):
        batch.curvature("ggn").solve(0.1, vectors[:, 0])
    with pytest.raises(quadra.Error, match="exposes no diagonal"):
        batch.curvature("hessian").diagonal()


def test_conv_network_gradient_and_hessian_product_match_torch():
    torch = pytest.importorskip("torch")
    model = quadra.Model("conv(2,3,pad=1) tanh flatten linear(3)", input_shape=(1, 4, 4), seed=2)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((5, 1, 4, 4))
    y = rng.integers(0, 3, 5)
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Tanh(),
                                 torch.nn.Flatten(), torch.nn.Linear(32, 3)).double()
    names = list(model.state_dict())
    shapes = [v.shape for v in model.state_dict().values()]

    def loss(theta):
        params, offset = {}, 0
        for name, shape in zip(names, shapes):
            size = int(np.prod(shape))
            params[name] = theta[offset:offset + size].reshape(shape)
            offset += size
        call = torch.func.functional_call if hasattr(torch, "func") else \
            torch.nn.utils.stateless.functional_call
        out = call(module, params, torch.from_numpy(X))
        return torch.nn.functional.cross_entropy(out, torch.from_numpy(y))

    theta = torch.tensor(model.parameters)
    v = rng.standard_normal(model.num_parameters)
    batch = model.bind(X, y, precision="float64")
    t = theta.clone().requires_grad_(True)
    grad = torch.autograd.grad(loss(t), t)[0].numpy()
    close(batch.gradient(), grad)
    hv = torch.autograd.functional.hvp(loss, theta, torch.from_numpy(v))[1].numpy()
    close(batch.curvature("hessian") @ v, hv)


def test_unknown_plugin_and_bad_options(batch):
    with pytest.raises(quadra.Error, match=r"unknown curvature plugin 'nope'; available: .*ggn"):
        batch.curvature("nope")
    with pytest.raises(quadra.Error, match="option 'type' of curvature 'kfac': 'bogus' is not one "
                                           "of: type-2, mc, empirical"):
        batch.curvature("kfac", type="bogus")
    with pytest.raises(quadra.Error, match="unknown option 'typo' for curvature 'kfac'; valid "
                                           "options: type, mc_samples, seed, damping_style"):
        batch.curvature("kfac", typo=1)
    with pytest.raises(quadra.Error, match="curvature option type=\\[1\\]"):
        batch.curvature("kfac", type=[1])
