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
eigen = {}
products = {}
for line in ours.stderr.splitlines():
    if line.startswith("eigenvalues "):
        _, batch, *values = line.split()
        eigen[int(batch)] = [float(v) for v in values]
    elif line.startswith("products "):
        products[int(line.split()[1])] = int(line.split()[2])

print(f"{'operation':<20}{'batch':>6}{'quadra s':>11}{'PyTorch s':>11}{'speed-up':>10}"
      f"{'max |dλ|/λ1':>14}{'products':>14}")
for (op, batch), row in sorted(peer_rows.items()):
    ours_s = quadra_rows[(op, batch)]
    accuracy = ""
    counts = ""
    if op == "top20":
        counts = f"{products.get(batch, '?')} / {row.get('products', '?')}"
        theirs = row["eigenvalues"]
        mine = eigen.get(batch, [])
        if len(mine) == len(theirs):
            accuracy = f"{max(abs(a - b) for a, b in zip(mine, theirs)) / abs(theirs[0]):.1e}"
    label = {"top20": "top-20 eigenpairs", "cg50": "50 CG iterations"}[op]
    print(f"{label:<20}{batch:>6}{ours_s:>11.3f}{row['seconds']:>11.3f}"
          f"{row['seconds'] / ours_s:>9.2f}x{accuracy:>14}{counts:>14}")
print(f"(float32, {args.threads} threads; GGN of the MLP 784-512-256-10 tanh; both include "
      "the forward pass; products: GGN products, quadra / PyTorch)")
