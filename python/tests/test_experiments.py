# quadra.compare, quadra.bias and quadra.laplace run the command line's experiments in process:
# the same files as the command line, and their tables as NumPy columns.
import os
import pathlib
import signal
import threading

import numpy as np
import pandas
import pytest

import quadra
from conftest import CONFIG, assert_same_model, cli

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "tests" / "cli" / "configs"
MOONS = "moons:n=600,test=200,seed=3"
SPEC = "linear(8) tanh linear(2)"
BIAS = dict(batch_size=64, top=3, repeats=2, precision="float64", normalize="none")
LAPLACE = dict(shift="none", ood="none", curvature_samples=200,
               validation_samples=100, prior_grid="1e-2:1e4:7", precision="float64")


def flags(options):
    """The keyword arguments as the command line spells them."""
    return [a for k, v in options.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def test_compare_writes_what_the_command_line_writes(tmp_path):
    ini = CONFIGS / "moons-compare.ini"
    cli("compare", "--config", ini, "--set", f"compare.out={tmp_path / 'cli'}",
        "--set", "train.max_steps=4")
    tables = quadra.compare(ini, out=tmp_path / "py", set={"train.max_steps": 4})

    assert tables.out == str(tmp_path / "py")
    assert list(tables) == ["summary", "curves"]
    summary = tables["summary"]
    assert list(summary["optimizer"]) == ["moons-sgd"] * 2 + ["moons-cg"] * 2
    assert summary["steps"].dtype == np.int64 and list(summary["steps"]) == [4] * 4
    assert summary["final_val_loss"].dtype == np.float64
    assert np.isnan(summary["time_to_target_s"]).all()  # no target set: empty cells
    for name in ("moons-sgd", "moons-cg"):
        for seed in (0, 1):
            assert_same_model(tmp_path / "cli" / name / f"seed{seed}",
                              tmp_path / "py" / name / f"seed{seed}")
    cli_curves = (tmp_path / "cli" / "curves.csv").read_text().splitlines()
    val_loss = [float(line.split(",")[6]) for line in cli_curves[1:]]
    assert np.array_equal(tables["curves"]["val_loss"], val_loss)
    frame = tables.frame("summary")
    assert isinstance(frame, pandas.DataFrame) and list(frame.columns) == list(summary)


def test_compare_takes_compare_out_from_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tables = quadra.compare(CONFIGS / "moons-compare.ini",
                            set={"train.max_steps": 2, "compare.out": "elsewhere"})
    assert tables.out == "elsewhere"
    assert (tmp_path / "elsewhere" / "summary.csv").exists()
    with pytest.raises(quadra.Error, match="already holds a comparison"):
        quadra.compare(CONFIGS / "moons-compare.ini", set={"compare.out": "elsewhere"})
    again = quadra.compare(CONFIGS / "moons-compare.ini", overwrite=True,
                           set={"train.max_steps": 3, "compare.out": "elsewhere"})
    assert list(again["summary"]["steps"]) == [3] * 4


def test_bias_tables_equal_the_command_lines_files(tmp_path):
    cli("bias", "--model", SPEC, "--data", MOONS, *flags(BIAS), "--out", tmp_path / "cli")
    tables = quadra.bias(SPEC, MOONS, out=tmp_path / "py", **BIAS)
    assert list(tables) == ["bias", "spectrum"]
    for name in tables:
        assert (tmp_path / "cli" / f"{name}.csv").read_text() == \
            (tmp_path / "py" / f"{name}.csv").read_text()
    bias = tables["bias"]
    assert set(bias["estimator"]) == {"same-batch", "independent", "full-batch"}
    assert len(bias["direction"]) == 3 * 2 * 3  # directions x quantities x estimators
    full_batch = bias["estimator"] == "full-batch"  # the reference: no bias of its own
    assert np.isfinite(bias["rel_bias"][~full_batch]).all()
    assert np.isnan(bias["rel_bias"][full_batch]).all()


def test_bias_takes_a_model_object_and_a_temporary_directory(tmp_path):
    model = quadra.Model(SPEC, input_shape=2, seed=5)
    model.save(tmp_path / "model.npz")
    from_file = quadra.bias(tmp_path / "model.npz", MOONS, **BIAS)
    from_object = quadra.bias(model, MOONS, **BIAS)
    assert from_file.out is None and from_object.out is None
    for column, values in from_file["bias"].items():
        assert np.array_equal(values, from_object["bias"][column],
                              equal_nan=values.dtype.kind == "f"), column


def test_bias_newton_step(tmp_path):
    options = {k: v for k, v in BIAS.items() if k != "top"}
    tables = quadra.bias(SPEC, MOONS, newton_step=True, lambdas=[1e-2, 1e-1], cg_iterations=5,
                         **options)
    assert list(tables) == ["newton_step"]
    assert set(tables["newton_step"]["lambda"]) == {0.01, 0.1}


def test_laplace_tables_equal_the_command_lines_files(tmp_path):
    run = quadra.train(CONFIG, out=tmp_path / "run")
    model = pathlib.Path(run.out) / "model.npz"
    data = "moons:n=300,test=100,noise=0.2,seed=3"
    cli("laplace", "--model", model, "--data", data, *flags(LAPLACE), "--out", tmp_path / "cli")
    tables = quadra.laplace(model, data, out=tmp_path / "py", **LAPLACE)
    for name in ("metrics", "reliability", "prior_search"):
        assert (tmp_path / "cli" / f"{name}.csv").read_text() == \
            (tmp_path / "py" / f"{name}.csv").read_text()
    assert set(tables["metrics"]["method"]) >= {"map", "same-data", "independent"}
    assert tables["metrics_json"]["parameters"] == quadra.Model(model).num_parameters
    probabilities = tables["test_probabilities"]
    assert set(probabilities) >= {"map", "independent"}
    assert probabilities["map"].shape == (100, 2)
    assert np.allclose(probabilities["map"].sum(axis=1), 1.0)


def test_experiments_raise_the_command_lines_messages(tmp_path):
    with pytest.raises(quadra.Error, match="unrecognised option '--no-such-flag'"):
        quadra.bias(SPEC, MOONS, no_such_flag=3)
    with pytest.raises(quadra.Error, match="repeats"):
        quadra.bias(SPEC, MOONS, repeats=1, **{k: v for k, v in BIAS.items() if k != "repeats"})
    with pytest.raises(quadra.Error, match="no-such-data"):
        quadra.laplace(SPEC, "no-such-data", out=tmp_path / "x")
    with pytest.raises(quadra.Error, match="compare.optimizers"):
        quadra.compare(CONFIGS / "moons-train.ini", out=tmp_path / "c")


def test_ctrl_c_stops_a_comparison_with_its_run_checkpointed(tmp_path):
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            # A budget far beyond the timer: only the interrupt ends the first run.
            quadra.compare(CONFIGS / "moons-compare.ini", out=tmp_path / "c",
                           set={"train.max_steps": 0, "train.max_seconds": 120})
    finally:
        timer.cancel()
    first = tmp_path / "c" / "moons-sgd" / "seed0"
    assert (first / "checkpoint.npz").exists()
    assert not (tmp_path / "c" / "moons-cg").exists()  # the comparison went no further
