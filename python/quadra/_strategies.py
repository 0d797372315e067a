"""Strategies written in Python: quadra.DampingStrategy and quadra.register."""

from . import _quadra


class DampingStrategy:
    """Base class of damping strategies written in Python; quadra.register(cls) makes one a
    damping plugin that configs name as `[optimizer] damping = NAME`, in quadra.train,
    quadra.compare and every command run from Python.

    Class attributes:
      name     the plugin name (lower-case letters, digits and inner '-'); required
      summary  one line for quadra.plugins()
      options  {option: default} or {option: (default, help)}: the [damping] keys it takes, typed
               by the default (bool, int, float, str) and validated as a plugin's options; the
               constructor receives them as keyword arguments

    The training loop calls, on its own thread and with the GIL taken for the call:
      damping() -> float                 the lambda for the next step (finite, >= 0)
      uses_reduction_ratio() -> bool     whether step_measured needs rho (else it gets nan and
                                         the loop skips measuring it)
      step_measured(rho) -> bool         adapt to the reduction ratio; True keeps the step
      step_invalid()                     the step was not finite or the solver failed
      state() -> list[float]             checkpointed state; load_state(state) restores it
    An exception raised by any of them ends the run and reaches the caller as itself, with a
    note naming the strategy and the method.
    """

    name = None
    summary = ""
    options = {}

    def damping(self):
        raise NotImplementedError(f"{type(self).__name__} must define damping()")

    def uses_reduction_ratio(self):
        return True

    def step_measured(self, rho):
        raise NotImplementedError(f"{type(self).__name__} must define step_measured(rho)")

    def step_invalid(self):
        raise NotImplementedError(f"{type(self).__name__} must define step_invalid()")

    def state(self):
        return []

    def load_state(self, state):
        if len(state) != 0:
            raise ValueError(f"{type(self).__name__} keeps no state but the checkpoint holds "
                             f"{len(state)} values")


def register(cls):
    """Registers a DampingStrategy subclass under cls.name (again: replaces the earlier class of
    that name). Returns cls, so it serves as a class decorator."""
    if not (isinstance(cls, type) and issubclass(cls, DampingStrategy)):
        raise TypeError(f"quadra.register: expected a quadra.DampingStrategy subclass, got {cls!r}")
    if not isinstance(cls.name, str) or not cls.name:
        raise _quadra.Error(f"quadra.register: {cls.__qualname__}.name must be the plugin's "
                            f"name, a non-empty str; got {cls.name!r}")
    if not isinstance(cls.options, dict):
        raise _quadra.Error(f"quadra.register: {cls.__qualname__}.options must be a dict of "
                            f"option -> default; got {cls.options!r}")
    _quadra._register_damping(cls, cls.name, cls.summary or "", dict(cls.options), replace=True)
    return cls
