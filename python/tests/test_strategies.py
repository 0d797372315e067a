# Damping strategies written in Python: registered, configured and called as plugins are, their
# state checkpointed, their exceptions raised to the caller as themselves.
import math

import numpy as np
import pytest

import quadra
from conftest import CONFIG, assert_same_model, csv_column


class Martens(quadra.DampingStrategy):
    """levenberg-marquardt's rule, line by line: runs must equal the built-in plugin's bitwise."""

    name = "py-martens"
    summary = "the levenberg-marquardt plugin's rule, in Python"
    options = {"initial_lambda": (1.0, "lambda of the first step"), "min_lambda": 1e-8,
               "max_lambda": 1e8, "increase": 1.5, "decrease": 2.0 / 3.0, "min_rho": 0.0}

    def __init__(self, initial_lambda, min_lambda, max_lambda, increase, decrease, min_rho):
        if not min_lambda <= initial_lambda <= max_lambda:
            raise ValueError(f"initial_lambda {initial_lambda} outside [{min_lambda}, "
                             f"{max_lambda}]")
        self.lam, self.bounds = initial_lambda, (min_lambda, max_lambda)
        self.increase, self.decrease, self.min_rho = increase, decrease, min_rho

    def set(self, value):
        self.lam = min(max(value, self.bounds[0]), self.bounds[1])

    def damping(self):
        return self.lam

    def step_measured(self, rho):
        accept = rho > self.min_rho
        if rho < 0.25 or not accept:
            self.set(self.lam * self.increase)
        elif rho > 0.75:
            self.set(self.lam * self.decrease)
        return accept

    def step_invalid(self):
        self.set(self.lam * self.increase * self.increase)

    def state(self):
        return [self.lam]

    def load_state(self, state):
        self.set(state[0])


quadra.register(Martens)


def with_damping(name, **options):
    config = {**CONFIG, "optimizer": dict(CONFIG["optimizer"], damping=name)}
    if options:
        config["damping"] = options
    return config


def test_a_python_strategy_trains_as_the_plugin_it_mirrors(tmp_path):
    plugin = quadra.train(with_damping("levenberg-marquardt", initial_lambda=0.3),
                          out=tmp_path / "plugin")
    python = quadra.train(with_damping("py-martens", initial_lambda=0.3), out=tmp_path / "py")
    assert_same_model(tmp_path / "plugin", tmp_path / "py")
    assert np.array_equal(plugin.step_records["lambda"], python.step_records["lambda"])
    assert len(set(python.step_records["lambda"])) > 1  # lambda did adapt
    listed = [p for p in quadra.plugins() if p["name"] == "py-martens"]
    assert listed == [{"kind": "damping", "name": "py-martens", "version": "",
                       "description": Martens.summary,
                       "file": "Python class test_strategies.Martens"}]


def test_its_state_is_checkpointed_and_resumed(tmp_path):
    config = with_damping("py-martens", initial_lambda=0.3)
    whole = quadra.train(config, out=tmp_path / "whole")
    quadra.train(config, out=tmp_path / "split",
                 callback=lambda e: "pause" if e.kind == "step" and e.step == 4 else None)
    resumed = quadra.train(config, out=tmp_path / "split", resume=True)
    assert resumed.steps == whole.steps
    assert_same_model(tmp_path / "whole", tmp_path / "split")
    assert csv_column(tmp_path / "whole" / "steps.csv", "lambda") == \
        csv_column(tmp_path / "split" / "steps.csv", "lambda")


def test_options_are_validated_as_a_plugins_are(tmp_path):
    with pytest.raises(quadra.Error, match="initial_lambda.*'fast'"):
        quadra.train(with_damping("py-martens", initial_lambda="fast"), out=tmp_path / "a")
    with pytest.raises(quadra.Error, match="unknown option 'lambda0'"):
        quadra.train(with_damping("py-martens", lambda0=1), out=tmp_path / "b")
    # The constructor's own checks: its exception's message, naming the strategy.
    with pytest.raises(quadra.Error, match=r"damping plugin 'py-martens' \(\"Python class "
                                           r"test_strategies.Martens\"\) could not be created: "
                                           r"ValueError: initial_lambda 1000000000.0 outside"):
        quadra.train(with_damping("py-martens", initial_lambda=1e9), out=tmp_path / "c")


def failing(method):
    class Failing(Martens):
        name = "py-failing"

    def fail(self, *args):
        raise ZeroDivisionError("no step today")

    setattr(Failing, method, fail)
    return quadra.register(Failing)


# How the host names the methods in its messages (the plugin interface's names).
CALLED_AS = {"damping": "lambda", "state": "save_state"}


@pytest.mark.parametrize("method", ["damping", "step_measured", "state"])
def test_its_exceptions_reach_the_caller_as_themselves(tmp_path, method):
    failing(method)
    config = with_damping("py-failing")
    config["train"] = dict(CONFIG["train"], checkpoint_every=1)
    with pytest.raises(ZeroDivisionError, match="no step today") as raised:
        quadra.train(config, out=tmp_path / "run")
    assert raised.value.__notes__ == [
        "damping plugin 'py-failing' (\"Python class test_strategies.failing.<locals>.Failing\") "
        f"threw from {CALLED_AS.get(method, method)}(): "
        "ZeroDivisionError: no step today"]
    assert (tmp_path / "run" / "manifest.json").exists()  # the run's files are written


def test_bad_return_values_and_non_finite_lambdas(tmp_path):
    class Wordy(Martens):
        name = "py-wordy"

        def step_measured(self, rho):
            return "yes"

    quadra.register(Wordy)
    with pytest.raises(quadra.Error, match=r"threw from step_measured\(\): step_measured\(\) "
                                           r"returned 'yes'; expected True"):
        quadra.train(with_damping("py-wordy"), out=tmp_path / "wordy")

    class Lost(Martens):
        name = "py-lost"

        def damping(self):
            return math.nan

    quadra.register(Lost)
    config = with_damping("py-lost")
    config["train"] = dict(CONFIG["train"], max_failures=2)
    result = quadra.train(config, out=tmp_path / "lost")
    assert result.failed and result.rejected_steps == 2
    assert "py-lost" in result.step_records["note"][0]


def test_register_checks_the_class_and_replaces_by_name(tmp_path):
    with pytest.raises(TypeError, match="DampingStrategy subclass"):
        quadra.register(int)

    class Nameless(quadra.DampingStrategy):
        pass

    with pytest.raises(quadra.Error, match="Nameless.name must be"):
        quadra.register(Nameless)

    class Shouting(Martens):
        name = "Py-Shouting"

    with pytest.raises(quadra.Error, match="invalid damping plugin name 'Py-Shouting'"):
        quadra.register(Shouting)

    class Odd(Martens):
        name = "py-odd"
        options = {"initial_lambda": [1.0]}

    with pytest.raises(quadra.Error, match=r"option 'initial_lambda': default \[1.0\] is not"):
        quadra.register(Odd)

    class Clash(Martens):
        name = "levenberg-marquardt"

    with pytest.raises(quadra.Error, match="duplicate damping plugin 'levenberg-marquardt'"):
        quadra.register(Clash)

    class Constant(Martens):
        name = "py-constant"

        def damping(self):
            return 1.0

    quadra.register(Constant)
    first = quadra.train(with_damping("py-constant"), out=tmp_path / "first")
    assert set(first.step_records["lambda"]) == {1.0}

    class Constant(Martens):  # noqa: F811 -- defined again, as in a notebook cell run twice
        name = "py-constant"

        def damping(self):
            return 0.5

    quadra.register(Constant)
    again = quadra.train(with_damping("py-constant"), out=tmp_path / "again")
    assert set(again.step_records["lambda"]) == {0.5}


def test_a_python_strategy_serves_in_compare(tmp_path):
    optimizer = tmp_path / "py-martens.ini"
    optimizer.write_text("[optimizer]\nsolver = cg\ncurvature = ggn\ndamping = py-martens\n")
    shared = tmp_path / "compare.ini"
    shared.write_text(
        "[compare]\noptimizers = py-martens.ini\nseeds = 0\n"
        "[model]\nspec = linear(8) tanh linear(2)\n"
        "[data]\nsource = moons:n=300,test=100,noise=0.2,seed=3\n"
        "[train]\nbatch_size = 50\nmax_steps = 3\nprogress = never\n")
    tables = quadra.compare(shared, out=tmp_path / "out")
    assert list(tables["summary"]["optimizer"]) == ["py-martens"]
    assert list(tables["summary"]["steps"]) == [3]
