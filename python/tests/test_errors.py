# Bad input raises quadra.Error (a ValueError) naming the argument, the value found and what was
# expected; quadra's own messages are the command line's.
import numpy as np
import pytest

import quadra
from conftest import N, SPEC


def test_error_is_a_value_error():
    assert issubclass(quadra.Error, ValueError)


def test_model_errors(model, tmp_path):
    with pytest.raises(quadra.Error, match=r"Model\('linear\(3\)'\): a layer spec needs input_shape"):
        quadra.Model("linear(3)")
    with pytest.raises(quadra.Error, match="lineer"):
        quadra.Model("lineer(3)", input_shape=4)
    with pytest.raises(quadra.Error, match="input_shape"):
        quadra.Model("linear(3)", input_shape=2.5)
    for missing in (tmp_path / "missing.npz", str(tmp_path / "missing.npz")):
        with pytest.raises(quadra.Error, match="cannot read .*missing.npz: No such file or directory"):
            quadra.Model(missing)
    with pytest.raises(quadra.Error, match="differs from the model file's input shape"):
        path = tmp_path / "m.npz"
        model.save(path)
        quadra.Model(path, input_shape=7)


def test_state_dict_errors(model):
    state = {k: v.copy() for k, v in model.state_dict().items()}
    del state["2.bias"]
    with pytest.raises(quadra.Error, match="missing array '2.bias'"):
        model.load_state_dict(state)
    state = {k: v.copy() for k, v in model.state_dict().items()}
    state["3.weight"] = np.zeros(2)
    with pytest.raises(quadra.Error, match="unexpected array '3.weight'"):
        model.load_state_dict(state)
    state = {k: v.copy() for k, v in model.state_dict().items()}
    state["0.weight"] = np.zeros((2, 2))
    with pytest.raises(quadra.Error, match=r"array '0.weight' has shape \(2, 2\)"):
        model.load_state_dict(state)
    state = {k: v.copy() for k, v in model.state_dict().items()}
    state["0.bias"][1] = np.nan
    with pytest.raises(quadra.Error, match="nan; expected finite numbers"):
        model.load_state_dict(state)
    state["0.bias"] = np.zeros(5, dtype=np.int64)
    with pytest.raises(quadra.Error, match=r"load_state_dict\['0.bias'\]: array has dtype int64; "
                                           "expected float32 or float64"):
        model.load_state_dict(state)
    before = model.parameters.copy()
    with pytest.raises(quadra.Error, match=r"parameters: array has shape \(3,\); expected \(53,\)"):
        model.parameters = np.zeros(3)
    np.testing.assert_array_equal(model.parameters, before)


def test_non_finite_parameters_are_refused_when_used(model, data):
    model.parameters[3] = np.nan
    with pytest.raises(quadra.Error, match="model.parameters: element 3 is nan; expected finite"):
        model.bind(*data)
    model.parameters[3] = 1e300  # finite in float64, not in float32
    model.bind(*data, precision="float64")
    with pytest.raises(quadra.Error, match="model.parameters: element 3 is inf; expected finite"):
        model(data[0].astype(np.float32))


def test_input_array_errors(model, data):
    X, y = data
    with pytest.raises(quadra.Error, match="X: inputs have dtype int32; expected uint8 "
                                           r"\(scaled by 1/255\), float32 or float64"):
        model.bind(X.astype(np.int32), y)
    with pytest.raises(quadra.Error, match=r"X: inputs have shape \(16, 5\) \(5 features per sample\); "
                                           rf"the model '{SPEC.replace('(', '.').replace(')', '.')}' "
                                           "expects 6 per sample"):
        model.bind(X[:, :5].copy(), y)
    with pytest.raises(quadra.Error, match=r"X: inputs have shape \(6,\); expected N x features"):
        model(X[0])
    with pytest.raises(quadra.Error, match=r"X: array of shape \(16, 6\) is not C-contiguous "
                                           r"\(strides \(8, 128\) bytes\); pass "
                                           r"numpy.ascontiguousarray\(X\)"):
        model.bind(np.asfortranarray(X), y)
    bad = X.copy()
    bad[3, 2] = np.inf
    with pytest.raises(quadra.Error, match=r"X: element 20 \(index \(3, 2\)\) is inf; expected "
                                           "finite numbers"):
        model.bind(bad, y)
    with pytest.raises(quadra.Error, match=r"X: inputs have dtype <U1; expected uint8"):
        model.bind([["a"]], y)


def test_target_errors(model, data):
    X, y = data
    with pytest.raises(quadra.Error, match="y: cross-entropy targets have dtype float64; expected "
                                           r"integer class labels \(int64\)"):
        model.bind(X, y.astype(np.float64))
    with pytest.raises(quadra.Error, match=rf"y: targets have shape \(3,\); expected \({N},\), one "
                                           "label per input"):
        model.bind(X, y[:3])
    bad = y.copy()
    bad[4] = 3
    with pytest.raises(quadra.Error, match=r"label 3 of sample 4 is outside \[0, 3\)"):
        model.bind(X, bad)
    with pytest.raises(quadra.Error, match=r"y: mse targets have shape \(16,\); expected \(16, 3\)"):
        model.bind(X, y.astype(np.float64), loss="mse")
    with pytest.raises(quadra.Error, match="unknown loss|cross-entropy"):
        model.bind(X, y, loss="hinge")
    with pytest.raises(quadra.Error, match="precision 'float16' is not float32 or float64"):
        model.bind(X, y, precision="float16")
    # int32 and uint8 labels are fine.
    assert model.bind(X, y.astype(np.uint8)).loss() == model.bind(X, y).loss()


def test_vector_errors(model, data):
    batch = model.bind(*data, precision="float64")
    G = batch.curvature("ggn")
    P = model.num_parameters
    with pytest.raises(quadra.Error, match=rf"v: array has shape \(3,\); expected \({P},\), one "
                                           "entry per parameter"):
        G @ np.zeros(3)
    with pytest.raises(quadra.Error, match="v: array has dtype int64; expected float32 or float64"):
        G @ np.zeros(P, dtype=np.int64)
    with pytest.raises(quadra.Error, match=r"v: array of shape \(53,\) is not contiguous \(strides "
                                           r"\(16,\) bytes\)"):
        G @ np.zeros(2 * P)[::2]
    v = np.zeros(P)
    v[7] = np.nan
    with pytest.raises(quadra.Error, match="v: element 7 is nan; expected finite numbers"):
        G @ v
    with pytest.raises(quadra.Error, match=rf"v: array has shape \(1, 1, {P}\); expected \({P},\) or "
                                           rf"\({P}, K\)"):
        G @ np.zeros((1, 1, P))
    V = np.zeros((P, 2))
    V[5, 1] = np.nan
    with pytest.raises(quadra.Error, match=r"V: element 11 \(index \(5, 1\)\) is nan"):
        G @ V
    with pytest.raises(quadra.Error, match=r"V: element 11 \(index \(5, 1\)\) is nan"):
        G @ np.asfortranarray(V)
    with pytest.raises(quadra.Error, match=r"diagonal\('hessian'\): expected 'ggn' or 'ef'"):
        batch.diagonal("hessian")


def test_thread_count_errors():
    with pytest.raises(quadra.Error, match=r"set_threads\(-1\): expected 0 \(all cores\) or more"):
        quadra.set_threads(-1)
