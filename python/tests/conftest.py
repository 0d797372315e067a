# Shared fixtures: a small classifier and regressor with data, and PyTorch references computed
# by autograd in float64 from the same parameters.
import csv
import os
import pathlib
import subprocess

import numpy as np
import pytest
import torch

import quadra

# The build tree whose module is tested: CTest says so; by hand it is where quadra came from
# (<build>/python/quadra/__init__.py).
BUILD_DIR = pathlib.Path(os.environ.get("QUADRA_TEST_BUILD_DIR",
                                        pathlib.Path(quadra.__file__).resolve().parents[2]))
FIXTURE_PLUGINS = BUILD_DIR / "test-fixtures" / "plugins"


def cache_value(name):
    """A variable of the build tree's CMakeCache.txt."""
    for line in (BUILD_DIR / "CMakeCache.txt").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split("=", 1)[1]
    raise KeyError(f"{name} is not in {BUILD_DIR / 'CMakeCache.txt'}")

SPEC = "linear(5) tanh linear(3)"
FEATURES, CLASSES, N = 6, 3, 16


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((N, FEATURES))
    y = rng.integers(0, CLASSES, N).astype(np.int64)
    return X, y


@pytest.fixture
def model():
    return quadra.Model(SPEC, input_shape=FEATURES, seed=3)


def unflatten(model, theta):
    """Splits a flat parameter tensor by the model's state_dict layout (weight row-major, then
    bias, layer after layer): checks quadra's layout along with the numbers."""
    params, offset = {}, 0
    for name, value in model.state_dict().items():
        size = value.size
        params[name] = theta[offset:offset + size].reshape(value.shape)
        offset += size
    assert offset == model.num_parameters
    return params


def torch_outputs(model, theta, X):
    p = unflatten(model, theta)
    hidden = torch.tanh(torch.as_tensor(X) @ p["0.weight"].T + p["0.bias"])
    return hidden @ p["2.weight"].T + p["2.bias"]


def per_sample_loss(outputs, y, loss):
    if loss == "cross-entropy":
        return torch.nn.functional.cross_entropy(outputs, torch.as_tensor(y), reduction="none")
    return ((outputs - torch.as_tensor(y)) ** 2).mean(dim=1)


class TorchReference:
    """Loss, gradient and curvature of the model's mean loss on (X, y) by PyTorch autograd."""

    def __init__(self, model, X, y, loss="cross-entropy"):
        self.model, self.X, self.y, self.loss_kind = model, X, y, loss
        self.theta = torch.tensor(model.parameters, dtype=torch.float64)
        self.P = self.theta.numel()

    def outputs(self, theta=None):
        return torch_outputs(self.model, self.theta if theta is None else theta, self.X)

    def mean_loss(self, theta):
        return per_sample_loss(self.outputs(theta), self.y, self.loss_kind).mean()

    def loss(self):
        return float(self.mean_loss(self.theta))

    def gradient(self):
        theta = self.theta.clone().requires_grad_(True)
        return torch.autograd.grad(self.mean_loss(theta), theta)[0].numpy()

    def per_sample_gradients(self):
        rows = []
        for n in range(len(self.X)):
            theta = self.theta.clone().requires_grad_(True)
            out = torch_outputs(self.model, theta, self.X[n:n + 1])
            ell = per_sample_loss(out, self.y[n:n + 1], self.loss_kind).sum()
            rows.append(torch.autograd.grad(ell, theta)[0].numpy())
        return np.stack(rows)

    def hessian(self):
        return torch.autograd.functional.hessian(self.mean_loss, self.theta).numpy()

    def ggn(self):
        """(1/N) sum_n J_n' Lambda_n J_n from the Jacobian and the loss Hessian in the outputs."""
        J = torch.autograd.functional.jacobian(self.outputs, self.theta)  # N x C x P
        f = self.outputs()
        G = torch.zeros(self.P, self.P, dtype=torch.float64)
        for n in range(len(self.X)):
            target = self.y[n:n + 1]
            lam = torch.autograd.functional.hessian(
                lambda out: per_sample_loss(out.unsqueeze(0), target, self.loss_kind).sum(), f[n])
            G += J[n].T @ lam @ J[n]
        return (G / len(self.X)).numpy()

    def empirical_fisher(self):
        g = self.per_sample_gradients()
        return g.T @ g / len(self.X)


@pytest.fixture
def reference(model, data):
    return TorchReference(model, *data)


@pytest.fixture(scope="session")
def misbehaving_plugin():
    """Loads the test fixture plugin `misbehaving` (one of each kind, faults on request) once."""
    directory = FIXTURE_PLUGINS / "misbehaving"
    if not directory.is_dir():
        pytest.fail(f"{directory} is missing: build the tests (QUADRA_BUILD_TESTS) first")
    return quadra.load_plugins(directory)


def intervals_run_alongside(call):
    """Runs call() on another thread while this one spins, and returns (result, inside, ran):
    the 10 ms intervals well inside the call (a margin of 10 switch intervals on each side) and
    how many of them this thread ran in. With the GIL held for the call it could run in none;
    with it released the scheduler shares the cores between both threads (a loaded machine may
    give this one only part of them, so tests ask for a few intervals)."""
    import threading
    import time

    window = {}

    def work():
        window["start"] = time.perf_counter()
        window["result"] = call()
        window["end"] = time.perf_counter()

    worker = threading.Thread(target=work)
    visited = set()
    worker.start()
    while worker.is_alive():
        visited.add(int(time.perf_counter() * 100))
    worker.join()
    margin = 10 * 0.005
    inside = range(int((window["start"] + margin) * 100) + 1, int((window["end"] - margin) * 100))
    return window["result"], inside, sum(1 for i in inside if i in visited)


# The command line and its files, for tests that compare a Python call with it.
QUADRA = BUILD_DIR / "bin" / "quadra"

# K-FAC-free second-order training on the synthetic moons: CG on the GGN with Levenberg-Marquardt
# damping and the debiased line search, the richest path through the loop, in well under 1 s.
CONFIG = {
    "optimizer": {"solver": "cg", "curvature": "ggn", "damping": "levenberg-marquardt",
                  "debiasing": "cg-line-search"},
    "solver": {"backtracking": False},
    "model": {"spec": "linear(8) tanh linear(2)"},
    "data": {"source": "moons:n=300,test=100,noise=0.2,seed=3"},
    "train": {"batch_size": 50, "max_steps": 12, "eval_every": 4, "progress": "never",
              "seed": 1},
}


def write_ini(path, config):
    lines = []
    for section, keys in config.items():
        lines.append(f"[{section}]")
        for key, value in keys.items():
            lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else value}")
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(*args, check=True):
    env = dict(os.environ, QUADRA_PLUGIN_PATH="")
    return subprocess.run([str(QUADRA), *map(str, args)], env=env, check=check,
                          capture_output=True, text=True)


def model_arrays(directory):
    with np.load(directory / "model.npz") as f:
        return {name: f[name] for name in f.files}


def assert_same_model(a, b):
    ma, mb = model_arrays(a), model_arrays(b)
    assert ma.keys() == mb.keys()
    for name in ma:
        assert np.array_equal(ma[name], mb[name]), name


def csv_column(path, name):
    with open(path, newline="") as f:
        return [row[name] for row in csv.DictReader(f)]
