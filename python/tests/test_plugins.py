# Plugins are found as the command line finds them: the built-in directory relative to the
# package, QUADRA_PLUGIN_PATH, and quadra.load_plugins(path).
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import quadra
from conftest import BUILD_DIR, FIXTURE_PLUGINS


def test_builtin_plugins_come_from_the_build_tree():
    found = {(p["kind"], p["name"]): p for p in quadra.plugins()}
    for name in ("ggn", "hessian", "empirical-fisher", "mc-fisher", "kfac", "diag-ggn", "diag-ef"):
        assert ("curvature", name) in found
    plugin_dir = (BUILD_DIR / "lib" / "quadra" / "plugins").resolve()
    ggn = pathlib.Path(found[("curvature", "ggn")]["file"]).resolve()
    assert ggn.parent == plugin_dir
    assert found[("damping", "constant")]["description"]


def test_load_plugins_and_guarded_calls(misbehaving_plugin, model, data):
    assert {(p["kind"], p["name"]) for p in misbehaving_plugin} >= {("curvature", "misbehaving")}
    batch = model.bind(*data, precision="float64")
    v = np.ones(model.num_parameters)
    good = batch.curvature("misbehaving")  # with fault=none, the exact GGN
    np.testing.assert_array_equal(good @ v, batch.curvature("ggn") @ v)
    throwing = batch.curvature("misbehaving", fault="apply-throws")
    with pytest.raises(quadra.Error, match=r"curvature plugin 'misbehaving' \(.*misbehaving.*\).*"
                                           "apply.*deliberate failure in apply"):
        throwing @ v
    nan = batch.curvature("misbehaving", fault="apply-nan")
    with pytest.raises(quadra.Error, match="misbehaving.*(nan|non-finite)"):
        nan @ v
    # Loading it again refuses the duplicates, as a warning.
    with pytest.warns(RuntimeWarning, match=r"duplicate \w+ plugin 'misbehaving'"):
        assert quadra.load_plugins(FIXTURE_PLUGINS / "misbehaving") == []


def test_load_plugins_errors():
    with pytest.raises(quadra.Error, match="plugin path .*nowhere.* is neither a directory nor a file"):
        quadra.load_plugins("/nowhere")
    library = next((FIXTURE_PLUGINS / "not_a_library").iterdir())
    with pytest.raises(quadra.Error, match="refused plugin .*not_a_library.*: not a loadable shared "
                                           "library"):
        quadra.load_plugins(library)
    with pytest.warns(RuntimeWarning, match="no entry point"):
        quadra.load_plugins(FIXTURE_PLUGINS / "no_entry_point")


def test_quadra_plugin_path_is_read_on_first_use():
    env = dict(os.environ, QUADRA_PLUGIN_PATH=str(FIXTURE_PLUGINS / "misbehaving"))
    code = ("import quadra; print(sorted(p['kind'] for p in quadra.plugins() "
            "if p['name'] == 'misbehaving'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "['curvature', 'damping', 'debiasing', 'solver']"
