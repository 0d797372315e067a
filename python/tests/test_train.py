# quadra.train runs the loop of `quadra train`: the same files and bitwise the same model, the
# command line's messages, a callback that sees and may stop the run, Ctrl-C with a checkpoint.
import os
import signal
import sys
import threading
import types

import numpy as np
import pytest

import quadra
from conftest import (CONFIG, assert_same_model, cli, csv_column, intervals_run_alongside,
                      write_ini)

def test_a_run_equals_the_command_lines_bitwise(tmp_path):
    ini = write_ini(tmp_path / "run.ini", CONFIG)
    cli("train", "--config", ini, "--set", f"train.out={tmp_path / 'cli'}")
    result = quadra.train(ini, out=tmp_path / "py")

    assert_same_model(tmp_path / "cli", tmp_path / "py")
    for log, column in (("steps.csv", "loss"), ("steps.csv", "lambda"), ("eval.csv", "val_loss")):
        assert csv_column(tmp_path / "cli" / log, column) == csv_column(tmp_path / "py" / log,
                                                                        column)
    # The records are the logs' rows at full precision.
    losses = [float(x) for x in csv_column(tmp_path / "cli" / "steps.csv", "loss")]
    assert np.array_equal(result.step_records["loss"], losses)
    val = [float(x) for x in csv_column(tmp_path / "cli" / "eval.csv", "val_loss")]
    assert np.array_equal(result.eval_records["val_loss"], val)

    assert result.steps == 12 and not result.failed
    assert result.stop_reason.startswith("budget")
    assert result.out == str(tmp_path / "py")
    assert result.final_eval.step == 12 and result.final_eval.kind == "evaluation"
    assert result.final_eval.val_loss == val[-1]
    with open(tmp_path / "cli" / "steps.csv") as f:
        header = f.readline().strip().split(",")
    assert list(result.step_records) == header
    with open(tmp_path / "cli" / "eval.csv") as f:
        assert list(result.eval_records) == f.readline().strip().split(",")
    assert result.step_records["step"].dtype == np.int64
    assert result.step_records["accepted"].dtype == bool
    assert list(result.step_records["step"]) == list(range(12))


def test_dicts_and_ini_files_agree_and_set_overrides(tmp_path):
    ini = write_ini(tmp_path / "run.ini", CONFIG)
    from_file = quadra.train(ini, set={"train.max_steps": 6}, out=tmp_path / "ini")
    nested = dict(CONFIG, train=dict(CONFIG["train"], out=tmp_path / "dict"))
    from_dict = quadra.train(nested, set={"train.max_steps": 6})
    flat = {f"{section}.{key}": value for section, keys in CONFIG.items()
            for key, value in keys.items()}
    from_flat = quadra.train(flat, set={"train.max_steps": 6}, out=tmp_path / "flat")
    assert from_file.steps == from_dict.steps == from_flat.steps == 6
    assert_same_model(tmp_path / "ini", tmp_path / "dict")
    assert_same_model(tmp_path / "ini", tmp_path / "flat")
    # bools are spelled as INI files spell them
    backtracking = quadra.train(CONFIG, set={"solver.backtracking": True, "train.max_steps": 3},
                                out=tmp_path / "bt")
    assert backtracking.steps == 3
    assert "backtracking = true" in (tmp_path / "bt" / "manifest.json").read_text()


@pytest.mark.parametrize("in_config, override", [
    ({"nope": 1}, None),
    (None, ("train.nope", 1)),
    (None, ("train.batch_size", "many")),
    (None, ("solver.learning_rate", 0.1)),
])
def test_bad_configs_raise_the_command_lines_messages(tmp_path, in_config, override):
    config = {**CONFIG, "train": dict(CONFIG["train"], out=tmp_path / "out", **(in_config or {}))}
    ini = write_ini(tmp_path / "run.ini", config)
    with pytest.raises(quadra.Error) as raised:
        quadra.train(config, set=None if override is None else {override[0]: override[1]})
    args = ["train", "--config", ini]
    if override is not None:
        args += ["--set", f"{override[0]}={override[1]}"]
    printed = cli(*args, check=False).stderr
    message = str(raised.value)
    assert message and message in printed, (message, printed)


def test_argument_errors(tmp_path):
    with pytest.raises(quadra.Error, match="needs config"):
        quadra.train()
    with pytest.raises(quadra.Error, match="give one of them"):
        quadra.train(CONFIG, resume=True, overwrite=True)
    with pytest.raises(quadra.Error, match="callback: expected a callable"):
        quadra.train(CONFIG, callback=3)
    with pytest.raises(quadra.Error, match="cannot be opened"):
        quadra.train(tmp_path / "missing.ini")
    with pytest.raises(quadra.Error, match="expected section.key"):
        quadra.train({"max_steps": 3})


def test_the_callback_sees_every_boundary_and_can_stop_a_resumable_run(tmp_path):
    whole = quadra.train(CONFIG, out=tmp_path / "whole")

    events = []

    def callback(event):
        events.append((event.kind, event.step))
        if event.kind == "step":
            assert event.loss == whole.step_records["loss"][event.step]
            if event.step == 4:
                return "enough for now"
            return False  # goes on, as None and "" do
        return ""

    stopped = quadra.train(CONFIG, out=tmp_path / "stopped", callback=callback)
    assert stopped.stop_reason == "enough for now"
    assert stopped.steps == 5 and not stopped.failed
    assert [s for k, s in events if k == "step"] == list(range(5))
    # evaluations at steps 0 and 4 on schedule, then the closing one at step 5
    assert [s for k, s in events if k == "evaluation"] == [0, 4, 5]
    assert list(stopped.eval_records["step"]) == [0, 4, 5]
    assert csv_column(tmp_path / "stopped" / "steps.csv", "step")[-1] == "4"

    resumed = quadra.train(CONFIG, out=tmp_path / "stopped", resume=True)
    assert resumed.steps == 12
    assert list(resumed.step_records["step"]) == list(range(5, 12))
    assert_same_model(tmp_path / "whole", tmp_path / "stopped")
    assert (csv_column(tmp_path / "whole" / "steps.csv", "loss") ==
            csv_column(tmp_path / "stopped" / "steps.csv", "loss"))


def test_a_callback_that_raises_stops_the_run_and_propagates(tmp_path):
    class Boom(Exception):
        pass

    def callback(event):
        if event.kind == "step" and event.step == 2:
            raise Boom("at step 2")

    with pytest.raises(Boom, match="at step 2"):
        quadra.train(CONFIG, out=tmp_path / "run", callback=callback)
    assert (tmp_path / "run" / "checkpoint.npz").is_file()
    assert csv_column(tmp_path / "run" / "steps.csv", "step")[-1] == "2"  # stopped right there

    with pytest.raises(TypeError, match="expected None"):
        quadra.train(CONFIG, out=tmp_path / "run", overwrite=True, callback=lambda event: True)


def test_ctrl_c_checkpoints_raises_keyboard_interrupt_and_resumes(tmp_path):
    quadra.train(CONFIG, out=tmp_path / "whole")

    def callback(event):
        if event.kind == "step" and event.step == 6:
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C: the loop's handler receives it

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        quadra.train(CONFIG, out=tmp_path / "run", callback=callback)
    assert signal.getsignal(signal.SIGINT) is handler
    assert (tmp_path / "run" / "checkpoint.npz").is_file()
    assert csv_column(tmp_path / "run" / "steps.csv", "step")[-1] == "6"

    resumed = quadra.train(CONFIG, out=tmp_path / "run", resume=True)
    assert resumed.steps == 12
    assert_same_model(tmp_path / "whole", tmp_path / "run")

    # Python's own handling of SIGINT is back after the run.
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)


def test_a_keyboard_interrupt_from_the_callback_is_an_interrupt(tmp_path):
    def callback(event):
        if event.kind == "step" and event.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quadra.train(CONFIG, out=tmp_path / "run", callback=callback)
    assert csv_column(tmp_path / "run" / "steps.csv", "step")[-1] == "3"
    assert quadra.train(CONFIG, out=tmp_path / "run", resume=True).steps == 12


def test_one_run_at_a_time(tmp_path):
    def callback(event):
        quadra.train(CONFIG, out=tmp_path / "inner")

    with pytest.raises(quadra.Error, match="another run is in progress"):
        quadra.train(CONFIG, out=tmp_path / "outer", callback=callback)

    def load(event):
        quadra.load_plugins(tmp_path)

    with pytest.raises(quadra.Error, match="a quadra.train run is in progress"):
        quadra.train(CONFIG, out=tmp_path / "outer", overwrite=True, callback=load)


def test_pandas_frames(tmp_path, monkeypatch):
    try:
        import pandas
    except ImportError:  # not a dependency: a stand-in shows what the frames are built from
        pandas = types.ModuleType("pandas")
        pandas.DataFrame = lambda columns: dict(columns)
        monkeypatch.setitem(sys.modules, "pandas", pandas)
    result = quadra.train(CONFIG, out=tmp_path / "run")
    steps, evals = result.steps_frame(), result.evals_frame()
    assert len(steps["loss"]) == 12 and list(steps) == list(result.step_records)
    assert list(evals["step"]) == [0, 4, 8, 12]


def test_another_python_thread_runs_while_training(tmp_path):
    quadra.set_threads(1)  # a core stays free for this thread
    try:
        config = {**CONFIG, "model": {"spec": "linear(256) tanh linear(256) tanh linear(2)"},
                  # a budget in seconds, so the run is long enough to tell on any machine
                  "train": dict(CONFIG["train"], max_steps=0, max_seconds=0.5, eval_every=0,
                                out=tmp_path / "run")}
        config["optimizer"] = {"solver": "sgd"}
        config.pop("solver")
        result, inside, ran = intervals_run_alongside(lambda: quadra.train(config))
    finally:
        quadra.set_threads(0)
    assert result.steps > 0
    assert len(inside) >= 10, "the run was too short to tell"
    assert ran >= 3, f"ran in {ran} of {len(inside)} intervals during the run"


def test_a_real_sigint_from_another_thread_stops_the_run(tmp_path):
    sent = threading.Event()

    def send():
        os.kill(os.getpid(), signal.SIGINT)
        sent.set()

    def callback(event):
        if event.kind == "step" and event.step == 2:
            threading.Thread(target=send).start()
            assert sent.wait(10)  # delivered to the loop's handler while this step ends

    with pytest.raises(KeyboardInterrupt):
        quadra.train(CONFIG, out=tmp_path / "run", callback=callback)
    assert csv_column(tmp_path / "run" / "steps.csv", "step")[-1] == "2"
    assert quadra.train(CONFIG, out=tmp_path / "run", resume=True).steps == 12


def test_a_failed_run_returns_with_its_reason(tmp_path):
    # CG on the GGN without damping finds no step length once the curvature vanishes.
    config = {**CONFIG, "optimizer": {"solver": "cg", "curvature": "ggn"},
              "train": dict(CONFIG["train"], max_failures=2, out=tmp_path / "run")}
    result = quadra.train(config)
    assert result.failed
    assert result.stop_reason.startswith("2 consecutive steps were rejected")
    assert result.rejected_steps >= 2
    assert not result.step_records["accepted"][-1]
    assert result.step_records["note"][-1] != ""
