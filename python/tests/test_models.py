# quadra.Model: specs, model files, parameters, state_dict with PyTorch's names, forward.
import numpy as np
import pytest
import torch

import quadra
from conftest import CLASSES, FEATURES, SPEC


def torch_module():
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 5), torch.nn.Tanh(),
                               torch.nn.Linear(5, CLASSES)).double()


def test_spec_model_has_pytorch_names_shapes_and_initialisation(model):
    assert model.spec == SPEC
    assert model.input_shape == (FEATURES,)
    assert model.num_outputs == CLASSES
    assert model.num_parameters == FEATURES * 5 + 5 + 5 * CLASSES + CLASSES
    reference = torch_module().state_dict()
    state = model.state_dict()
    assert list(state) == list(reference)
    for name, value in state.items():
        assert value.shape == tuple(reference[name].shape)
        assert value.dtype == np.float64
    # PyTorch's default initialisation bounds: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    assert np.abs(state["0.weight"]).max() <= 1 / np.sqrt(FEATURES)
    assert np.abs(state["2.weight"]).max() <= 1 / np.sqrt(5)
    # Seeded: the same seed gives the same parameters, another seed others.
    assert np.array_equal(quadra.Model(SPEC, FEATURES, seed=3).parameters, model.parameters)
    assert not np.array_equal(quadra.Model(SPEC, FEATURES, seed=4).parameters, model.parameters)


def test_input_shape_spellings():
    for shape in (FEATURES, (FEATURES,), [FEATURES], str(FEATURES), np.int64(FEATURES),
                  np.array([FEATURES])):
        assert quadra.Model(SPEC, input_shape=shape).input_shape == (FEATURES,)
    conv = quadra.Model("conv(2,3) relu flatten linear(4)", input_shape="1x5x5")
    assert conv.input_shape == (1, 5, 5)
    assert quadra.Model("conv(2,3) relu flatten linear(4)", input_shape=(1, 5, 5)).spec == conv.spec


def test_state_dict_round_trip_with_torch(model, data):
    X, _ = data
    module = torch_module()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    expected = module(torch.from_numpy(X)).detach().numpy()
    np.testing.assert_allclose(model(X), expected, rtol=0, atol=1e-13)
    assert model(X).dtype == np.float64
    assert model(X.astype(np.float32)).dtype == np.float32
    np.testing.assert_allclose(model(X, precision="float32"), expected, rtol=0, atol=1e-5)

    # And back: a torch state_dict (tensors) loads into quadra.
    trained = torch_module()
    other = quadra.Model(SPEC, input_shape=FEATURES)
    other.load_state_dict(trained.state_dict())
    np.testing.assert_array_equal(other.state_dict()["2.bias"], trained.state_dict()["2.bias"].numpy())
    np.testing.assert_allclose(other(X), trained(torch.from_numpy(X)).detach().numpy(), atol=1e-13)


def test_parameters_and_state_dict_are_views(model, data):
    X, _ = data
    before = model(X)
    state = model.state_dict()
    state["2.bias"][:] += 1.0  # shifts every logit by one
    np.testing.assert_allclose(model(X), before + 1.0, atol=1e-12)
    assert model.parameters[-1] == state["2.bias"][-1]
    model.parameters[-CLASSES:] -= 1.0
    np.testing.assert_allclose(model(X), before, atol=1e-12)
    # Assigning copies in (and converts float32).
    values = np.arange(model.num_parameters, dtype=np.float32)
    model.parameters = values
    np.testing.assert_array_equal(model.parameters, values.astype(np.float64))
    values[0] = 100
    assert model.parameters[0] == 0


def test_save_and_load_model_file(model, data, tmp_path):
    X, _ = data
    path = tmp_path / "model.npz"
    model.save(path, dtype="float64")
    loaded = quadra.Model(path)
    assert loaded.spec == model.spec and loaded.input_shape == model.input_shape
    np.testing.assert_array_equal(loaded.parameters, model.parameters)
    assert loaded.preprocessing is None
    np.testing.assert_array_equal(loaded.preprocess(X), X)
    # float32 files as the command line writes them; str paths work too.
    model.save(str(tmp_path / "model32.npz"))
    loaded32 = quadra.Model(str(tmp_path / "model32.npz"))
    np.testing.assert_array_equal(loaded32.parameters,
                                  model.parameters.astype(np.float32).astype(np.float64))
    with np.load(tmp_path / "model32.npz") as archive:
        assert archive["0.weight"].dtype == np.float32
        assert bytes(archive["__spec__"]).decode() == SPEC
    # Weights from a weight file over a spec.
    weights = tmp_path / "weights.npz"
    np.savez(weights, **model.state_dict())
    again = quadra.Model(SPEC, input_shape=FEATURES, seed=99, weights=weights)
    np.testing.assert_array_equal(again.parameters, model.parameters)
    again = quadra.Model(SPEC, input_shape=FEATURES, seed=99, weights=model.state_dict())
    np.testing.assert_array_equal(again.parameters, model.parameters)


def test_model_file_preprocessing_is_reported_and_applied(model, tmp_path):
    # A model file as quadra train writes it with standardize-global preprocessing.
    path = tmp_path / "trained.npz"
    arrays = dict(model.state_dict())
    arrays["__spec__"] = np.frombuffer(SPEC.encode(), dtype=np.uint8)
    arrays["__input_shape__"] = np.array([FEATURES], dtype=np.int64)
    arrays["__normalize__"] = np.frombuffer(b"standardize-global", dtype=np.uint8)
    arrays["__shift__"] = np.array([0.5], dtype=np.float32)
    arrays["__scale__"] = np.array([2.0], dtype=np.float32)
    np.savez(path, **arrays)
    loaded = quadra.Model(path)
    assert loaded.preprocessing.startswith("standardize-global")
    raw = np.full((2, FEATURES), 255, dtype=np.uint8)
    np.testing.assert_allclose(loaded.preprocess(raw), np.full((2, FEATURES), 1.0), atol=1e-6)
    # Saving keeps it.
    loaded.save(tmp_path / "again.npz")
    assert quadra.Model(tmp_path / "again.npz").preprocessing == loaded.preprocessing


def test_conv_model_forward_matches_torch():
    model = quadra.Model("conv(2,3,pad=1) relu maxpool(2) flatten linear(4)", input_shape=(1, 6, 6),
                         seed=5)
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(),
                                 torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                                 torch.nn.Linear(18, 4)).double()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    X = np.random.default_rng(0).standard_normal((3, 1, 6, 6))
    np.testing.assert_allclose(model(X), module(torch.from_numpy(X)).detach().numpy(), atol=1e-13)
    # Flat inputs of the same size are accepted, as by the command line.
    np.testing.assert_array_equal(model(X.reshape(3, 36)), model(X))


def test_uint8_inputs_are_scaled(model):
    raw = np.arange(2 * FEATURES, dtype=np.uint8).reshape(2, FEATURES)
    np.testing.assert_allclose(model(raw), model(raw.astype(np.float32) / 255), atol=1e-6)


def test_repr(model):
    assert repr(model) == f"quadra.Model('{SPEC}', input_shape={FEATURES}, 53 parameters)"


def test_norm_model_state_dict_with_buffers_round_trips_with_torch():
    # batchnorm (eval mode: running statistics), groupnorm, layernorm; the running statistics
    # are buffers and travel in the state_dict both ways.
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Tanh(),
                                 torch.nn.GroupNorm(2, 4), torch.nn.Flatten(),
                                 torch.nn.LayerNorm([64]), torch.nn.Linear(64, 3)).double().eval()
    with torch.no_grad():
        module[1].running_mean.copy_(torch.randn(4))
        module[1].running_var.copy_(torch.rand(4) + 0.5)
        module[1].num_batches_tracked.fill_(9)
        for i in (1, 3, 5):
            module[i].weight.copy_(torch.randn(module[i].weight.shape))
            module[i].bias.copy_(torch.randn(module[i].bias.shape))
    model = quadra.Model("conv(4,3) batchnorm tanh groupnorm(2) flatten layernorm linear(3)",
                         input_shape=(1, 6, 6))
    model.load_state_dict(module.state_dict())
    X = np.random.default_rng(1).standard_normal((5, 1, 6, 6))
    np.testing.assert_allclose(model(X), module(torch.from_numpy(X)).detach().numpy(), atol=1e-12)
    state = model.state_dict()
    assert state["1.num_batches_tracked"].dtype == np.int64 and state["1.num_batches_tracked"].shape == ()
    np.testing.assert_array_equal(state["1.running_var"], module[1].running_var.numpy())
    fresh = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Tanh(),
                                torch.nn.GroupNorm(2, 4), torch.nn.Flatten(),
                                torch.nn.LayerNorm([64]), torch.nn.Linear(64, 3)).double().eval()
    fresh.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    np.testing.assert_allclose(fresh(torch.from_numpy(X)).detach().numpy(), model(X), atol=1e-12)


def test_onnx_file_loads_with_state_dict_names_and_pytorch_gradient():
    # An exported ResNet with BatchNorm (tests/fixtures/onnx): quadra.Model reads it as it reads
    # model files, with the original module's state_dict names, buffers included (ONNX does not
    # record num_batches_tracked: it comes back as 0).
    import pathlib
    onnx = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "onnx"
    model = quadra.Model(str(onnx / "resnet.onnx"))
    state = model.state_dict()
    reference = np.load(onnx / "resnet_state.npz")
    assert sorted(state) == sorted(reference.files)
    for key in reference.files:
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(state[key], reference[key])
    X, y = np.load(onnx / "resnet_x.npy"), np.load(onnx / "resnet_y.npy")
    np.testing.assert_allclose(model(X), np.load(onnx / "resnet_logits.npy"), rtol=1e-12,
                               atol=1e-12)
    flat = model.bind(X, y, precision="float64").gradient()
    expected = np.load(onnx / "resnet_grad.npz")
    offset = 0
    for name, value in state.items():
        if name in expected.files:  # parameters, in the flat vector's order; not buffers
            np.testing.assert_allclose(flat[offset:offset + value.size].reshape(value.shape),
                                       expected[name], rtol=1e-10, atol=1e-14)
            offset += value.size
    assert offset == flat.size


def test_batch_norm_modes_match_torch_train_and_eval():
    spec = "conv(3,3,pad=1,bias=false) batchnorm relu flatten linear(3)"
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1, bias=False),
                                 torch.nn.BatchNorm2d(3), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(48, 3)).double()
    with torch.no_grad():
        module[1].weight.uniform_(0.5, 1.5)
        module[1].bias.uniform_(-0.5, 0.5)
        module[1].running_mean.uniform_(-0.5, 0.5)
        module[1].running_var.uniform_(0.5, 2.0)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((16, 2, 4, 4))
    y = rng.integers(0, 3, 16).astype(np.int64)

    state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def torch_gradient(train):
        module.load_state_dict(state)  # train mode's forward pass updates the running statistics
        module.train(train)
        module.zero_grad()
        out = module(torch.from_numpy(X))
        torch.nn.functional.cross_entropy(out, torch.from_numpy(y)).backward()
        return np.concatenate([p.grad.numpy().ravel() for p in module.parameters()])

    for mode, train in (("batch", True), ("running", False)):
        model = quadra.Model(spec, input_shape=(2, 4, 4), batch_norm=mode)
        model.load_state_dict(state)
        assert model.batch_norm == mode
        batch = model.bind(X.reshape(16, -1), y, precision="float64")
        np.testing.assert_allclose(batch.gradient(), torch_gradient(train), rtol=1e-10, atol=1e-13)
        if mode == "batch":
            with pytest.raises(quadra.Error, match="batch statistics"):
                batch.per_sample_gradients()
        else:
            assert batch.per_sample_gradients().shape == (16, model.num_parameters)
    assert quadra.Model(SPEC, input_shape=FEATURES).batch_norm is None
    assert quadra.Model(spec, input_shape=(2, 4, 4)).batch_norm == "running"
    with pytest.raises(quadra.Error, match="batch_norm.*'eval'"):
        quadra.Model(spec, input_shape=(2, 4, 4), batch_norm="eval")
    with pytest.raises(quadra.Error, match="batch_norm: expected 'running' or 'batch'"):
        quadra.Model(spec, input_shape=(2, 4, 4), batch_norm=1)
