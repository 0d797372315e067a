#!/usr/bin/python3
"""Train a small PyTorch classifier, hand its state_dict to quadra, and look at its curvature:

1. the top eigenvalues of the GGN on one mini-batch (quadra.lanczos; SciPy's eigsh agrees), and
2. the bias of the same-batch estimate: the curvature u'Gu along the top eigenvectors u of one
   batch's GGN, measured on that batch, on an independent batch and on the whole training set.
   Directions chosen on a batch see that batch's noise as curvature, so the same-batch values
   overstate the full-data ones; the independent batch does not.

Run from the build tree (PYTHONPATH=build/release/python) or after `cmake --install`:

    python3 examples/python/ggn_spectrum_and_bias.py [--repeats R] [--top K] [--out DIR]

Writes ggn_bias.png into --out when matplotlib is installed, and prints the numbers either way.
"""
import argparse
import pathlib

import numpy as np
import torch
from scipy.sparse.linalg import eigsh

import quadra


def make_data(n, features, classes, rng):
    """Overlapping Gaussian classes pushed through a fixed random nonlinearity."""
    centres = rng.standard_normal((classes, features)) * 0.6
    y = rng.integers(0, classes, n)
    X = centres[y] + rng.standard_normal((n, features))
    X = np.tanh(X @ rng.standard_normal((features, features)) / np.sqrt(features))
    return X.astype(np.float32), y.astype(np.int64)


def train(X, y, hidden, classes, epochs, seed):
    torch.manual_seed(seed)
    module = torch.nn.Sequential(torch.nn.Linear(X.shape[1], hidden), torch.nn.Tanh(),
                                 torch.nn.Linear(hidden, classes))
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    data = torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(y))
    loader = torch.utils.data.DataLoader(data, batch_size=128, shuffle=True)
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(module(xb), yb).backward()
            optimizer.step()
    return module


def curvature_along(G, U):
    """u'Gu for every column u of U (one block product)."""
    return np.einsum("pk,pk->k", U, G @ U)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="independent batch pairs")
    parser.add_argument("--top", type=int, default=5, help="eigenvectors per batch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("."))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    features, hidden, classes = 20, 32, 4
    X, y = make_data(4096, features, classes, rng)
    module = train(X, y, hidden, classes, args.epochs, seed=0)
    with torch.no_grad():
        accuracy = (module(torch.from_numpy(X)).argmax(1).numpy() == y).mean()
    print(f"trained {features}-{hidden}-{classes} MLP: training accuracy {100 * accuracy:.1f} %")

    # PyTorch's state_dict names are quadra's: the same network, now in quadra.
    model = quadra.Model(f"linear({hidden}) tanh linear({classes})", input_shape=features,
                         weights={k: v.detach().numpy() for k, v in module.state_dict().items()})
    logits = module(torch.from_numpy(X[:8])).detach().numpy()
    assert np.allclose(model(X[:8]), logits, atol=1e-5)

    # 1. The top GGN eigenvalues of one batch, by quadra's Lanczos and by SciPy's eigsh.
    first = rng.choice(len(X), args.batch_size, replace=False)
    G = model.bind(X[first], y[first], precision="float64").curvature("ggn")
    top = quadra.lanczos(G, args.top, tolerance=1e-10)
    scipy_top = np.sort(eigsh(G.as_linear_operator(), k=args.top, which="LA")[0])[::-1]
    print(f"top-{args.top} GGN eigenvalues of a batch of {args.batch_size} "
          f"({top.num_products} products):")
    for k, (ours, theirs) in enumerate(zip(top.eigenvalues, scipy_top), 1):
        print(f"  {k:2d}  quadra {ours:.8f}   scipy eigsh {theirs:.8f}")

    # 2. Same-batch bias: directions from batch A, curvature on A, on B and on all the data.
    full = model.bind(X, y, precision="float64").curvature("ggn")
    same, independent, whole = [], [], []
    for _ in range(args.repeats):
        a, b = np.split(rng.choice(len(X), 2 * args.batch_size, replace=False), 2)
        G_a = model.bind(X[a], y[a], precision="float64").curvature("ggn")
        G_b = model.bind(X[b], y[b], precision="float64").curvature("ggn")
        values, U = quadra.lanczos(G_a, args.top, tolerance=1e-8)
        same.append(values)  # u'G_a u = the eigenvalue
        independent.append(curvature_along(G_b, U))
        whole.append(curvature_along(full, U))
    same, independent, whole = map(np.array, (same, independent, whole))
    print(f"curvature along the top eigenvectors of batch A (mean over {args.repeats} draws):")
    print("   k   same batch A   independent B   training set   rel. bias A   rel. bias B")
    for k in range(args.top):
        bias_a = np.mean(same[:, k] / whole[:, k] - 1)
        bias_b = np.mean(independent[:, k] / whole[:, k] - 1)
        print(f"  {k + 1:2d}   {same[:, k].mean():12.6f}   {independent[:, k].mean():13.6f}   "
              f"{whole[:, k].mean():12.6f}   {100 * bias_a:+10.1f}%   {100 * bias_b:+10.1f}%")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure")
        return
    ks = np.arange(1, args.top + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.semilogy(ks, top.eigenvalues, "o-")
    left.set(title="top GGN eigenvalues (one batch)", xlabel="k", ylabel="eigenvalue")
    for values, label in ((same, "same batch"), (independent, "independent batch"),
                          (whole, "training set")):
        right.errorbar(ks, values.mean(0), yerr=values.std(0) / np.sqrt(len(values)), marker="o",
                       capsize=3, label=label)
    right.set(title="u'Gu along batch A's eigenvectors", xlabel="k", yscale="log")
    right.legend()
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "ggn_bias.png", dpi=120)
    print(f"wrote {args.out / 'ggn_bias.png'}")


if __name__ == "__main__":
    main()
