#!/usr/bin/python3
"""Top-20 GGN eigenpairs and 50 CG iterations: quadra vs the PyTorch peer, side by side.

    /usr/bin/python3 bench/compare_spectrum.py [--build build/release] [--threads 2]

Runs bench/torch_spectrum_peer.py (which also writes the shared problem files), then
bench_spectrum from the build directory on the same files, and prints times, the speed-up
and how far quadra's eigenvalues are from the peer's (relative to the largest).
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
parser = argparse.ArgumentParser()
parser.add_argument("--build", default=str(HERE.parent / "build" / "release"))
parser.add_argument("--threads", type=int, default=os.cpu_count())
args = parser.parse_args()

with tempfile.TemporaryDirectory() as out:
    peer = subprocess.run([sys.executable, str(HERE / "torch_spectrum_peer.py"), "--out", out,
                           "--threads", str(args.threads)], check=True, capture_output=True, text=True)
    peer_rows = {(r["op"], r["batch"]): r for r in map(json.loads, peer.stdout.splitlines())}
    env = dict(os.environ, QUADRA_SPECTRUM_DIR=out, QUADRA_THREADS=str(args.threads))
    ours = subprocess.run([str(pathlib.Path(args.build) / "bin" / "bench_spectrum"),
                           "--benchmark_format=json"], env=env, check=True, capture_output=True, text=True)

quadra_rows = {}
for b in json.loads(ours.stdout)["benchmarks"]:
    name, batch = b["name"].split("/")[:2]
    quadra_rows[(name, int(batch))] = b["real_time"] / 1e3  # ms -> s
# Eigenvalues and product counts per (benchmark, batch): "eigenvalues" / "products" lines are
# Lanczos on GGN products (top20), the "_gram" ones the Gram-matrix method (top20_gram).
eigen = {}
products = {}
for line in ours.stderr.splitlines():
    if len(line.split()) < 3 or not line.split()[1].isdigit():
        continue
    key, batch, *rest = line.split()
    op = "top20_gram" if key.endswith("_gram") else "top20"
    if key.startswith("eigenvalues"):
        eigen[(op, int(batch))] = [float(v) for v in rest]
    elif key.startswith("products"):
        products[(op, int(batch))] = int(rest[0])
# The Gram method answers the same question as the peer's top20.
for (op, batch), row in list(peer_rows.items()):
    if op == "top20":
        peer_rows[("top20_gram", batch)] = row

print(f"{'operation':<20}{'batch':>6}{'quadra s':>11}{'PyTorch s':>11}{'speed-up':>10}"
      f"{'max |dλ|/λ1':>14}{'products':>14}")
for (op, batch), row in sorted(peer_rows.items()):
    ours_s = quadra_rows[(op, batch)]
    accuracy = ""
    counts = ""
    if op.startswith("top20"):
        counts = f"{products.get((op, batch), '?')} / {row.get('products', '?')}"
        theirs = row["eigenvalues"]
        mine = eigen.get((op, batch), [])
        if len(mine) == len(theirs):
            accuracy = f"{max(abs(a - b) for a, b in zip(mine, theirs)) / abs(theirs[0]):.1e}"
    label = {"top20": "top-20 eigenpairs", "top20_gram": "top-20, Gram method",
             "cg50": "50 CG iterations"}[op]
    print(f"{label:<20}{batch:>6}{ours_s:>11.3f}{row['seconds']:>11.3f}"
          f"{row['seconds'] / ours_s:>9.2f}x{accuracy:>14}{counts:>14}")
print(f"(float32, {args.threads} threads; GGN of the MLP 784-512-256-10 tanh; both include "
      "the forward pass; products: GGN products (Gram method: Gram-matrix products), quadra / "
      "PyTorch)")
