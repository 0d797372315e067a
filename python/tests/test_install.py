# `cmake --install` puts the package into <prefix>/<QUADRA_PYTHON_INSTALL_DIR>; imported from
# there it finds the installed plugins, not the build tree's.
import os
import pathlib
import subprocess
import sys

from conftest import BUILD_DIR, cache_value


def test_import_from_an_install_prefix(tmp_path):
    prefix = tmp_path / "prefix"
    subprocess.run([os.environ.get("QUADRA_TEST_CMAKE", "cmake"), "--install", str(BUILD_DIR), "--prefix",
                    str(prefix)], check=True, capture_output=True)
    site = prefix / cache_value("QUADRA_PYTHON_INSTALL_DIR")
    assert (site / "quadra" / "__init__.py").is_file()
    assert (site / "quadra" / "_quadra.pyi").is_file() and (site / "quadra" / "py.typed").is_file()
    code = """
import pathlib, numpy as np, quadra
print(pathlib.Path(quadra.__file__).resolve().parent)
print(sorted({pathlib.Path(p['file']).resolve().parent.as_posix() for p in quadra.plugins()}))
m = quadra.Model('linear(3)', input_shape=2)
b = m.bind(np.ones((4, 2)), np.array([0, 1, 2, 0]), precision='float64')
print(round(float(quadra.lanczos(b.curvature('ggn'), 1).eigenvalues[0]), 12) > 0)
"""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QUADRA_PLUGIN_PATH")}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    assert pathlib.Path(out[0]) == (site / "quadra").resolve()
    assert out[1] == str([(prefix / "lib" / "quadra" / "plugins").resolve().as_posix()])
    assert out[2] == "True"
