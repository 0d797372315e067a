"""quadra.compare, quadra.bias and quadra.laplace: the command line's experiments in process,
returning the tables they write as NumPy columns."""

import csv
import json
import os
import pathlib
import shutil
import tempfile

import numpy as np

from . import _quadra


class Tables(dict):
    """What an experiment returns: table name -> {column: NumPy array}, in the order of the CSV
    file the command line writes (OUT/NAME.csv). Numeric columns are float64 or int64 (an empty
    cell is nan), the others str. `out` is the directory the files are in (None when the call
    wrote to a temporary one); `frame(name)` gives one table as a pandas DataFrame."""

    out = None

    def frame(self, name):
        """The table `name` as a pandas.DataFrame. Needs pandas."""
        import pandas  # only when asked for: pandas is not a dependency

        return pandas.DataFrame(self[name])

    def __repr__(self):
        shapes = ", ".join(f"{k}: {_rows(v)} rows" for k, v in self.items() if isinstance(v, dict))
        return f"Tables({shapes}; out={self.out!r})"


def _rows(columns):
    for value in columns.values():
        return len(value) if hasattr(value, "__len__") else 0
    return 0


def _column(cells):
    for kind in (np.int64, np.float64):
        try:
            return np.array([kind(c) if c != "" else np.nan for c in cells], dtype=kind)
        except (ValueError, TypeError):  # a non-number, or an empty cell in an int column
            continue
    return np.array(cells, dtype=str)


def read_csv(path):
    """A CSV file the command line wrote, as {column: NumPy array}."""
    with open(path, newline="") as f:
        rows = list(csv.reader(row for row in f if not row.startswith("#")))
    if not rows:
        return {}
    header, body = rows[0], rows[1:]
    return {name: _column([r[i] if i < len(r) else "" for r in body])
            for i, name in enumerate(header)}


def _flag_value(value):
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _arguments(options, set):
    """Keyword arguments as the command line's flags: batch_size=128 -> --batch-size 128;
    True -> the bare flag, False or None -> left out; lists -> comma-separated."""
    args = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        else:
            args += [flag, _flag_value(value)]
    for key, value in (set or {}).items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        args += ["--set", f"{key}={text}"]
    return args


def _run(name, args):
    code = _quadra._run_command(name, args)
    if code != 0:
        raise _quadra.Error(f"quadra {name} {' '.join(args)} ended with exit code {code}; "
                            "its messages are above")


class _OutputDirectory:
    """`out` as given, or a temporary directory that is removed once the tables are read."""

    def __init__(self, out):
        self.temporary = out is None
        self.path = pathlib.Path(tempfile.mkdtemp(prefix="quadra-")) if out is None else \
            pathlib.Path(os.fspath(out))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.temporary:
            shutil.rmtree(self.path, ignore_errors=True)


def _model_argument(model, directory):
    """A quadra.Model is handed over as a model file (spec, weights, preprocessing)."""
    if isinstance(model, _quadra.Model):
        path = directory / "model.npz"
        model.save(path)
        return str(path)
    return os.fspath(model)


def _tables(directory, names, out):
    tables = Tables()
    for name in names:
        path = directory / f"{name}.csv"
        if path.exists():
            tables[name] = read_csv(path)
    tables.out = None if out is None else str(directory)
    return tables


def compare(config, set=None, out=None, overwrite=False) -> Tables:
    """Runs `quadra compare --config CONFIG [--set K=V]... [--overwrite]` in process: every
    optimizer of compare.optimizers x every seed, each run's files in OUT/NAME/seedS/.

    config: the comparison's INI file (optimizer files are found relative to it). set:
    {"section.key": value} applied after it, as --set. out: compare.out (default: the config's,
    else runs/compare). Returns Tables with "summary" (summary.csv: one row per run, final and
    best metrics, time and steps to compare.target_accuracy/target_loss) and "curves"
    (curves.csv: every evaluation of every run)."""
    config = os.fspath(config)
    set = dict(set or {})
    if out is not None:
        set["compare.out"] = os.fspath(out)
    args = ["--config", config] + _arguments({"overwrite": overwrite}, set)
    _run("compare", args)
    assignments = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    directory = pathlib.Path(_quadra._config_value(config, assignments, "compare.out") or
                             "runs/compare")
    return _tables(directory, ["summary", "curves"], out=directory)


def bias(model, data, out=None, set=None, **options) -> Tables:
    """Runs `quadra bias --model MODEL --data DATA ...` in process and returns its tables.

    model: a layer spec, a model file or a quadra.Model. Every other flag of `quadra bias
    --help` is a keyword: batch_size=512, top=10, repeats=10, directions="eigen"|"cg",
    curvature="ggn", precision="float64", newton_step=True, lambdas=[1e-3, 1e-2],
    debiasing=["cg-line-search", "cg-projected"], ... set: {"curvature.KEY": value}.
    out: the directory for the CSV files and figures (default: a temporary one, removed).
    Returns Tables with "bias" and "spectrum" (bias.csv, spectrum.csv), or "newton_step" with
    newton_step=True."""
    with _OutputDirectory(out) as directory:
        directory.path.mkdir(parents=True, exist_ok=True)
        args = ["--model", _model_argument(model, directory.path),
                "--data", os.fspath(data), "--out", str(directory.path)]
        _run("bias", args + _arguments(options, set))
        return _tables(directory.path, ["bias", "spectrum", "newton_step"], out)


def laplace(model, data, out=None, set=None, **options) -> Tables:
    """Runs `quadra laplace --model MODEL --data DATA ...` in process and returns its tables.

    model: a trained model file or quadra.Model. Every other flag of `quadra laplace --help` is
    a keyword: structure="kfac", debiasing=["same-data", "independent"], curvature_samples=2000,
    prior_precision="marglik", predictive="probit", save="posterior.npz", ...
    out: the directory for its files (default: a temporary one, removed). Returns Tables with
    "metrics", "reliability" and "prior_search" (their CSV files), "metrics_json" (metrics.json
    as a dict) and "test_probabilities" ({method: the clean test set's N x C predictive})."""
    with _OutputDirectory(out) as directory:
        directory.path.mkdir(parents=True, exist_ok=True)
        args = ["--model", _model_argument(model, directory.path),
                "--data", os.fspath(data), "--out", str(directory.path)]
        _run("laplace", args + _arguments(options, set))
        tables = _tables(directory.path, ["metrics", "reliability", "prior_search"], out)
        with open(directory.path / "metrics.json") as f:
            tables["metrics_json"] = json.load(f)
        tables["test_probabilities"] = {
            p.stem[len("test_probabilities_"):]: np.load(p)
            for p in sorted(directory.path.glob("test_probabilities_*.npy"))}
        return tables
