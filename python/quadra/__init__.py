"""quadra on NumPy arrays: exact curvature products, curvature plugins and quadra's linear algebra.

    import numpy as np, quadra
    model = quadra.Model("linear(64) tanh linear(10)", input_shape=784)
    batch = model.bind(X, y, precision="float64")      # X: (N, 784), y: (N,) int labels
    G = batch.curvature("ggn")                          # any curvature plugin, with its options
    values, vectors = quadra.lanczos(G, k=5)            # top-5 eigenpairs
    scipy.sparse.linalg.eigsh(G.as_linear_operator(), k=5)
    run = quadra.train("run.ini", set={"train.max_steps": 100})  # as `quadra train`
    tables = quadra.compare("compare.ini")                       # as `quadra compare`

Every engine call releases the GIL. Bad input raises quadra.Error (a ValueError) with the
message the quadra command line prints. docs/python.md in the source tree has the whole API.
"""

import os as _os

from . import _paths
from ._quadra import (
    Batch,
    CgResult,
    Curvature,
    Error,
    EvalRecord,
    GramEigenpairs,
    LanczosResult,
    Model,
    SpectralDensity,
    StepRecord,
    TraceEstimate,
    TrainResult,
    __version__,
    build_key,
    cg,
    gram_eigenpairs,
    hutchinson_trace,
    lanczos,
    load_plugins,
    plugins,
    set_threads,
    slq_density,
    threads,
    train,
)
from ._quadra import _set_builtin_plugin_dir
from ._experiments import Tables, bias, compare, laplace
from ._strategies import DampingStrategy, register

__all__ = [
    "Batch",
    "CgResult",
    "Curvature",
    "DampingStrategy",
    "Error",
    "EvalRecord",
    "GramEigenpairs",
    "LanczosResult",
    "Model",
    "SpectralDensity",
    "StepRecord",
    "TraceEstimate",
    "Tables",
    "TrainResult",
    "__version__",
    "bias",
    "build_key",
    "cg",
    "compare",
    "gram_eigenpairs",
    "hutchinson_trace",
    "lanczos",
    "laplace",
    "load_plugins",
    "plugins",
    "register",
    "set_threads",
    "slq_density",
    "threads",
    "train",
]

for _name in __all__:
    if isinstance(globals()[_name], type):
        globals()[_name].__module__ = __name__  # quadra.Error, not quadra._quadra.Error

# The built-in plugins sit at a fixed place relative to this package, in the build tree and in
# an install alike (_paths.py is generated for each); QUADRA_PLUGIN_PATH adds more.
_set_builtin_plugin_dir(
    _os.path.normpath(_os.path.join(_os.path.dirname(_os.path.abspath(__file__)),
                                    _paths.PLUGIN_DIR_FROM_PACKAGE)))


def _as_linear_operator(self):
    """C as a scipy.sparse.linalg.LinearOperator (symmetric: rmatvec is matvec), for eigsh,
    cg, minres and friends. Needs SciPy."""
    import numpy as np
    from scipy.sparse.linalg import LinearOperator

    curvature = self

    class _CurvatureOperator(LinearOperator):
        def __init__(self):
            super().__init__(dtype=curvature.dtype, shape=curvature.shape)

        def _matvec(self, x):
            # SciPy hands over (P,) or (P, 1); a strided vector is copied once here.
            return curvature @ np.ascontiguousarray(np.ravel(x))

        def _matmat(self, X):
            return curvature @ np.asfortranarray(X)

        def _rmatvec(self, x):
            return self._matvec(x)

        def _adjoint(self):
            return self

    return _CurvatureOperator()


Curvature.as_linear_operator = _as_linear_operator


def _frame(columns):
    import pandas  # only when asked for: pandas is not a dependency

    return pandas.DataFrame(columns)


def _steps_frame(self):
    """step_records as a pandas DataFrame (steps.csv's columns). Needs pandas."""
    return _frame(self.step_records)


def _evals_frame(self):
    """eval_records as a pandas DataFrame (eval.csv's columns). Needs pandas."""
    return _frame(self.eval_records)


TrainResult.steps_frame = _steps_frame
TrainResult.evals_frame = _evals_frame
