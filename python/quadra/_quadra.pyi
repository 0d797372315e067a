# Type stubs of the extension module quadra._quadra (re-exported by the quadra package).
import os
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence, Union

import numpy as np
import numpy.typing as npt

_Path = Union[str, os.PathLike[str]]
_Shape = Union[int, Sequence[int], str]
_Array = npt.ArrayLike
_Option = Union[bool, int, float, str]

__version__: str
build_key: str

class Error(ValueError):
    """Bad input to quadra, with the message the quadra command line prints."""

def set_threads(n: int) -> None: ...
def threads() -> int: ...
def plugins() -> list[dict[str, str]]: ...
def load_plugins(path: _Path) -> list[dict[str, str]]: ...
def _set_builtin_plugin_dir(dir: str) -> None: ...

class Model:
    def __init__(
        self,
        spec_or_file: _Path,
        input_shape: _Shape | None = None,
        seed: int = 0,
        weights: _Path | Mapping[str, _Array] | None = None,
        batch_norm: str | None = None,
    ) -> None: ...
    @property
    def spec(self) -> str: ...
    @property
    def batch_norm(self) -> str | None: ...
    @property
    def input_shape(self) -> tuple[int, ...]: ...
    @property
    def num_outputs(self) -> int: ...
    @property
    def num_parameters(self) -> int: ...
    @property
    def parameters(self) -> npt.NDArray[np.float64]:
        """A float64 view of the parameters: writing into it changes the model."""
    @parameters.setter
    def parameters(self, value: _Array) -> None: ...
    @property
    def preprocessing(self) -> str | None: ...
    def state_dict(self) -> dict[str, npt.NDArray[np.float64]]:
        """Views of `parameters` by PyTorch's state_dict names and shapes."""
    def load_state_dict(self, state_dict: Mapping[str, _Array]) -> None: ...
    def save(self, path: _Path, dtype: str = "float32") -> None: ...
    def __call__(self, X: _Array, precision: str | None = None) -> npt.NDArray[np.floating[Any]]: ...
    def preprocess(self, X: _Array) -> npt.NDArray[np.floating[Any]]: ...
    def bind(
        self, X: _Array, y: _Array, loss: str = "cross-entropy", precision: str = "float32"
    ) -> Batch: ...

class Batch:
    @property
    def batch_size(self) -> int: ...
    @property
    def num_parameters(self) -> int: ...
    @property
    def num_outputs(self) -> int: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def loss_kind(self) -> str: ...
    def loss(self) -> float: ...
    def per_sample_losses(self) -> npt.NDArray[np.floating[Any]]: ...
    def outputs(self) -> npt.NDArray[np.floating[Any]]: ...
    def gradient(self) -> npt.NDArray[np.floating[Any]]: ...
    def per_sample_gradients(self) -> npt.NDArray[np.floating[Any]]: ...
    def diagonal(self, kind: str = "ggn") -> npt.NDArray[np.floating[Any]]: ...
    def jvp(self, v: _Array) -> npt.NDArray[np.floating[Any]]: ...
    def vjp(self, U: _Array) -> npt.NDArray[np.floating[Any]]: ...
    def kfac_factors(
        self, type: str = "type-2", mc_samples: int = 1, seed: int = 0
    ) -> list[dict[str, Any]]: ...
    def curvature(self, name: str = "ggn", **options: _Option) -> Curvature: ...

class Curvature:
    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def structure(self) -> str: ...
    def __matmul__(self, v: _Array) -> npt.NDArray[np.floating[Any]]: ...
    def matvec(self, v: _Array) -> npt.NDArray[np.floating[Any]]: ...
    def solve(self, lam: float, v: _Array) -> npt.NDArray[np.floating[Any]]: ...
    def diagonal(self) -> npt.NDArray[np.floating[Any]]: ...
    def as_linear_operator(self) -> Any:
        """A scipy.sparse.linalg.LinearOperator."""

class LanczosResult:
    eigenvalues: npt.NDArray[np.float64]
    eigenvectors: npt.NDArray[np.floating[Any]]
    residual_norms: npt.NDArray[np.float64]
    norm_estimate: float
    num_products: int
    num_restarts: int
    num_thick_restarts: int
    converged: bool
    stop: str
    def __iter__(self) -> Iterator[npt.NDArray[Any]]: ...

class CgResult:
    x: npt.NDArray[np.floating[Any]]
    termination: str
    iterations: int
    num_products: int
    residual_norm: float
    b_norm: float
    negative_curvature: float
    quadratic: list[float]
    residual_norms: list[float]
    step_lengths: list[float]
    curvatures: list[float]

class TraceEstimate:
    mean: float
    standard_error: float
    samples: list[float]
    num_products: int
    def __float__(self) -> float: ...

class SpectralDensity:
    x: npt.NDArray[np.float64]
    density: npt.NDArray[np.float64]
    nodes: list[float]
    weights: list[float]
    sigma: float
    num_products: int

class GramEigenpairs:
    eigenvalues: npt.NDArray[np.float64]
    eigenvectors: npt.NDArray[np.floating[Any]]
    residual_norms: npt.NDArray[np.float64]
    trace: float
    gram_size: int
    num_products: int
    converged: bool
    def __iter__(self) -> Iterator[npt.NDArray[Any]]: ...

def gram_eigenpairs(
    batch: Batch, k: int, tolerance: float = 1e-6, max_products: int = 300, seed: int = 0
) -> GramEigenpairs: ...
def lanczos(
    C: Curvature,
    k: int,
    which: str = "largest",
    tolerance: float = 1e-8,
    max_products: int = 300,
    seed: int = 0,
    max_basis: int = 0,
) -> LanczosResult: ...
def cg(
    C: Curvature,
    b: _Array,
    damping: float = 0.0,
    tolerance: float = 1e-6,
    max_iterations: int = 250,
    x0: _Array | None = None,
    martens: bool = False,
) -> CgResult: ...
def hutchinson_trace(C: Curvature, probes: int = 100, seed: int = 0) -> TraceEstimate: ...
def slq_density(
    C: Curvature, probes: int = 10, steps: int = 80, seed: int = 0, points: int = 512, sigma: float = 0.0
) -> SpectralDensity: ...

class StepRecord:
    """One step, as a row of steps.csv (the damping is `lambda_`)."""

    kind: Literal["step"]
    step: int
    epoch: float
    loss: float
    lambda_: float
    rho: float
    accepted: bool
    note: str
    directions: int
    iterations: int
    curvature_products: int
    step_norm: float
    seconds: float
    propose_seconds: float
    debias_seconds: float
    measure_seconds: float

class EvalRecord:
    """One evaluation, as a row of eval.csv."""

    kind: Literal["evaluation"]
    step: int
    epoch: float
    seconds: float
    train_seconds: float
    train_loss: float
    val_loss: float
    val_accuracy: float
    test_loss: float
    test_accuracy: float

class TrainResult:
    stop_reason: str
    failed: bool
    steps: int
    rejected_steps: int
    curvature_products: int
    seconds: float
    final_eval: EvalRecord
    best_eval: EvalRecord
    out: str
    step_records: dict[str, npt.NDArray[Any]]
    eval_records: dict[str, npt.NDArray[Any]]
    def steps_frame(self) -> Any: ...
    def evals_frame(self) -> Any: ...

def train(
    config: _Path | Mapping[str, Any] | None = None,
    set: Mapping[str, Any] | None = None,
    out: _Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[StepRecord | EvalRecord], str | Literal[False] | None] | None = None,
    plugin_path: _Path | None = None,
) -> TrainResult: ...

# The command line's subcommands in process, and Python strategies (quadra._experiments and
# quadra._strategies build the public quadra.compare/bias/laplace and quadra.register on them).
def _run_command(name: str, args: list[str]) -> int: ...
def _config_value(file: str | None, assignments: list[str], key: str) -> str | None: ...
def _register_damping(
    cls: type, name: str, summary: str, options: dict[str, object], replace: bool
) -> None: ...
