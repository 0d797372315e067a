#!/usr/bin/python3
"""Top-20 GGN eigenpairs and 50 CG iterations: quadra vs the PyTorch peer, side by side.

    /usr/bin/python3 bench/compare_spectrum.py [--build build/release] [--threads 2] [--rounds 3]

Runs bench/torch_spectrum_peer.py (which also writes the shared problem files), then
bench_spectrum from the build directory on the same files, in alternating rounds, and prints
median times, the median per-round speed-up with its range, and how far quadra's eigenvalues
are from the peer's (relative to the largest).
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
parser.add_argument("--rounds", type=int, default=3,
                    help="alternating rounds of both sides; speed-ups are per-round medians")
args = parser.parse_args()
if args.rounds < 1:
    sys.exit(f"compare_spectrum: --rounds {args.rounds}; expected at least 1")


def run_peer(out):
    peer = subprocess.run([sys.executable, str(HERE / "torch_spectrum_peer.py"), "--out", out,
                           "--threads", str(args.threads)], check=True, capture_output=True,
                          text=True)
    rows = {(r["op"], r["batch"]): r for r in map(json.loads, peer.stdout.splitlines())}
    # The Gram method answers the same question as the peer's top20.
    for (op, batch), row in list(rows.items()):
        if op == "top20":
            rows[("top20_gram", batch)] = row
    return rows


def run_quadra(out):
    env = dict(os.environ, QUADRA_SPECTRUM_DIR=out, QUADRA_THREADS=str(args.threads))
    ours = subprocess.run([str(pathlib.Path(args.build) / "bin" / "bench_spectrum"),
                           "--benchmark_format=json"], env=env, check=True, capture_output=True,
                          text=True)
    seconds = {}
    for b in json.loads(ours.stdout)["benchmarks"]:
        name, batch = b["name"].split("/")[:2]
        seconds[(name, int(batch))] = b["real_time"] / 1e3  # ms -> s
    return seconds, ours.stderr


# Rounds alternate the two sides (as in compare_engine.py): a slow spell of a shared machine
# then does not land on one side only. Every peer run writes the same seeded problem (weights,
# batches) that bench_spectrum reads.
peer_rounds, quadra_rounds = [], []
with tempfile.TemporaryDirectory() as out:
    peer_rounds.append(run_peer(out))
    seconds, stderr = run_quadra(out)
    quadra_rounds.append(seconds)
    for r in range(1, args.rounds):
        if r % 2 == 1:
            seconds, stderr = run_quadra(out)
            quadra_rounds.append(seconds)
            peer_rounds.append(run_peer(out))
        else:
            peer_rounds.append(run_peer(out))
            seconds, stderr = run_quadra(out)
            quadra_rounds.append(seconds)


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


# Eigenvalues and product counts per (benchmark, batch), from the last quadra run: "eigenvalues"
# / "products" lines are Lanczos on GGN products (top20), the "_gram" ones the Gram-matrix
# method (top20_gram). Both are deterministic, so every round prints the same.
eigen = {}
products = {}
for line in stderr.splitlines():
    if len(line.split()) < 3 or not line.split()[1].isdigit():
        continue
    key, batch, *rest = line.split()
    op = "top20_gram" if key.endswith("_gram") else "top20"
    if key.startswith("eigenvalues"):
        eigen[(op, int(batch))] = [float(v) for v in rest]
    elif key.startswith("products"):
        products[(op, int(batch))] = int(rest[0])

print(f"{'operation':<20}{'batch':>6}{'quadra s':>11}{'PyTorch s':>11}{'speed-up':>10}"
      f"{'range':>14}{'max |dλ|/λ1':>14}{'products':>14}")
for (op, batch), row in sorted(peer_rounds[0].items()):
    pairs = [(q[(op, batch)], p[(op, batch)]["seconds"]) for q, p in zip(quadra_rounds, peer_rounds)]
    ratios = [t / q for q, t in pairs]
    spread = f"{min(ratios):.2f}-{max(ratios):.2f}x" if len(ratios) > 1 else ""
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
    print(f"{label:<20}{batch:>6}{median([q for q, _ in pairs]):>11.3f}"
          f"{median([t for _, t in pairs]):>11.3f}{median(ratios):>9.2f}x{spread:>14}"
          f"{accuracy:>14}{counts:>14}")
print(f"(float32, {args.threads} threads, {args.rounds} round(s); GGN of the MLP 784-512-256-10 "
      "tanh; both include the forward pass; products: GGN products (Gram method: Gram-matrix products), quadra / "
      "PyTorch)")
