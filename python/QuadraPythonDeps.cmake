# Finds what the Python module needs, quietly, and sets QUADRA_PYTHON_AVAILABLE, the default of
# the QUADRA_PYTHON option.
#
# The interpreter is Debian's /usr/bin/python3 unless -DPython3_EXECUTABLE names another: the
# module is built for one interpreter, and the tests need the NumPy, SciPy and PyTorch that
# scripts/setup.sh installs for that one (a pyenv or venv python3 earlier on PATH lacks them).
if(NOT DEFINED Python3_EXECUTABLE AND EXISTS /usr/bin/python3)
  set(Python3_EXECUTABLE /usr/bin/python3 CACHE FILEPATH "Python interpreter of the quadra module")
endif()
find_package(Python3 3.9 QUIET COMPONENTS Interpreter Development.Module)
if(Python3_FOUND)
  find_package(pybind11 2.6 CONFIG QUIET)
endif()

set(QUADRA_PYTHON_AVAILABLE OFF)
if(QUADRA_SANITIZE)
  # A sanitized extension module cannot be loaded by an unsanitized interpreter.
  message(STATUS "Python module off by default: QUADRA_SANITIZE is set")
elseif(Python3_Interpreter_FOUND AND Python3_Development.Module_FOUND AND pybind11_FOUND)
  set(QUADRA_PYTHON_AVAILABLE ON)
else()
  message(STATUS "Python module off by default: it needs pybind11-dev and python3-dev "
                 "(scripts/setup.sh installs them)")
endif()
