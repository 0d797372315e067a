# The module and the quadra command line run the same engine and plugins: the same model, batch
# and vector give bitwise the same numbers.
import os
import subprocess

import numpy as np
import pytest

import quadra
from conftest import BUILD_DIR, SPEC

QUADRA = BUILD_DIR / "bin" / "quadra"


def run(*args):
    env = dict(os.environ, QUADRA_PLUGIN_PATH="")
    return subprocess.run([str(QUADRA), *map(str, args)], env=env, check=True,
                          capture_output=True, text=True).stdout


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_curvature_products_equal_the_command_lines(model, data, tmp_path, precision):
    X, y = data
    v = np.random.default_rng(4).standard_normal(model.num_parameters)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "v.npy", v)
    model.save(tmp_path / "model.npz", dtype="float64")
    run("curvature", "--model", tmp_path / "model.npz", "--inputs", tmp_path / "X.npy", "--targets",
        tmp_path / "y.npy", "--vector", tmp_path / "v.npy", "--diagonals", "--seed", 5,
        "--precision", precision, "--out", tmp_path / "out")
    out = {name: np.load(tmp_path / "out" / f"{name}.npy") for name in
           ("loss", "grad", "ggn_v", "hessian_v", "ef_v", "mc_fisher_v", "ggn_diag", "ef_diag")}

    batch = model.bind(X, y, precision=precision)
    assert out["grad"].dtype == batch.dtype
    assert out["loss"] == np.array(batch.loss(), dtype=batch.dtype)
    np.testing.assert_array_equal(out["grad"], batch.gradient())
    np.testing.assert_array_equal(out["ggn_v"], batch.curvature("ggn") @ v)
    np.testing.assert_array_equal(out["hessian_v"], batch.curvature("hessian") @ v)
    np.testing.assert_array_equal(out["ef_v"], batch.curvature("empirical-fisher") @ v)
    np.testing.assert_array_equal(out["mc_fisher_v"],
                                  batch.curvature("mc-fisher", samples=1, seed=5) @ v)
    np.testing.assert_array_equal(out["ggn_diag"], batch.diagonal("ggn"))
    np.testing.assert_array_equal(out["ef_diag"], batch.diagonal("ef"))


def test_lanczos_equals_quadra_spectrum(model, data, tmp_path):
    X, y = data
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    text = run("spectrum", "--model", SPEC, "--input-shape", X.shape[1], "--seed", 3, "--inputs",
               tmp_path / "X.npy", "--targets", tmp_path / "y.npy", "--curvature", "kfac",
               "--top", 3, "--probes", 0, "--precision", "float64")
    printed = [float(line) for line in text.splitlines() if not line.startswith("#")]
    batch = model.bind(X, y, precision="float64")
    ours = quadra.lanczos(batch.curvature("kfac"), 3, tolerance=1e-6, seed=0).eigenvalues
    np.testing.assert_allclose(ours, printed, rtol=1e-9)  # printed with 10 digits
