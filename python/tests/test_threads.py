# Engine calls release the GIL, and calls on one batch from several threads are serialised.
import threading
import time

import numpy as np
import pytest

import quadra
from conftest import intervals_run_alongside


@pytest.fixture
def one_thread():
    """quadra on one thread, so a core stays free for the Python thread that keeps counting."""
    before = quadra.threads()
    quadra.set_threads(1)
    yield
    quadra.set_threads(0)
    assert quadra.threads() >= 1 and before >= 1


def test_set_threads():
    quadra.set_threads(1)
    assert quadra.threads() == 1
    quadra.set_threads(0)
    assert quadra.threads() >= 1


def test_another_python_thread_runs_while_a_product_computes(one_thread):
    model = quadra.Model("linear(256) tanh linear(10)", input_shape=256, seed=0)
    rng = np.random.default_rng(0)
    batch = model.bind(rng.standard_normal((512, 256)), rng.integers(0, 10, 512))
    H = batch.curvature("hessian")
    columns = 4
    while True:  # a block of Hessian products that takes at least 0.3 s on this machine
        V = np.asfortranarray(rng.standard_normal((model.num_parameters, columns)), dtype=np.float32)
        start = time.perf_counter()
        H @ V
        if time.perf_counter() - start >= 0.3:
            break
        columns *= 2

    _, inside, ran = intervals_run_alongside(lambda: H @ V)
    assert len(inside) >= 10
    assert ran >= 3, f"ran in {ran} of {len(inside)} intervals during the product"


def test_concurrent_calls_on_one_batch_give_the_serial_results(model, data):
    batch = model.bind(*data, precision="float64")
    G, H = batch.curvature("ggn"), batch.curvature("mc-fisher", seed=4)
    vectors = np.random.default_rng(5).standard_normal((8, model.num_parameters))
    expected = [(G @ v, H @ v) for v in vectors]
    results = [None] * len(vectors)

    def run(i):
        for _ in range(20):
            results[i] = (G @ vectors[i], H @ vectors[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(vectors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (g, h), (eg, eh) in zip(results, expected):
        np.testing.assert_array_equal(g, eg)
        np.testing.assert_array_equal(h, eh)


def test_results_do_not_depend_on_the_thread_count(model, data):
    v = np.random.default_rng(6).standard_normal(model.num_parameters)
    quadra.set_threads(1)
    one = model.bind(*data).curvature("hessian") @ v
    quadra.set_threads(2)
    two = model.bind(*data).curvature("hessian") @ v
    quadra.set_threads(0)
    np.testing.assert_array_equal(one, two)
