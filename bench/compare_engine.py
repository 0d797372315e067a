#!/usr/bin/python3
"""Runs bench_engine (quadra) and torch_peer.py (PyTorch) with the same thread count and dtype,
and prints the side-by-side table with the speed-up (PyTorch time / quadra time; > 1: quadra
is faster) and whether each meets its goal.

Usage: bench/compare_engine.py [--build DIR] [--threads N] [--dtype float32|float64]
                               [--filter REGEX] [--budget SECONDS] [--rounds R]
DIR is a Release build with -DQUADRA_BUILD_BENCH=ON (default: build/release). Run it on an idle
machine: both sides measure wall-clock medians.
"""
import argparse
import json
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Goals (float32, 2 threads): minimum speed-up per op at batch 128; at batch 1024
# nothing may be slower than PyTorch.
TARGETS_128 = {"grad": 1.2, "ggnvp_cached": 1.5, "hvp_cached": 1.5, "persample_grad": 10.0}

parser = argparse.ArgumentParser()
parser.add_argument("--build", default=str(ROOT / "build" / "release"))
parser.add_argument("--threads", type=int, default=os.cpu_count())
parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
parser.add_argument("--filter", default="")
parser.add_argument("--budget", type=float, default=0.5, help="seconds per measurement")
parser.add_argument("--rounds", type=int, default=3,
                    help="alternating rounds of both sides; speed-ups are per-round medians")
parser.add_argument("--plain-malloc", action="store_true",
                    help="do not raise glibc's mmap/trim thresholds (see below)")
args = parser.parse_args()
if args.rounds < 1:
    sys.exit(f"compare_engine: --rounds {args.rounds}; expected at least 1")

# Both sides allocate their activations afresh for every gradient; with glibc's default
# thresholds every such allocation is returned to the kernel and page-faulted back in, which
# costs quadra about 40 % of a batch-128 gradient. Blocks above 32 MiB (the CNN's activations at
# batch 1024) are always mmapped unless mmap is off: 17 % of that gradient. The same tunables go
# to both processes (the quadra CLI sets the same policy itself, see core/src/cli/cli.cpp).
MALLOC = ("glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824:"
          "glibc.malloc.mmap_max=0")
base_env = dict(os.environ)
if not args.plain_malloc:
    base_env["GLIBC_TUNABLES"] = MALLOC

exe = pathlib.Path(args.build) / "bin" / "bench_engine"
if not exe.exists():
    sys.exit(f"compare_engine: {exe} not found; build with -DQUADRA_BUILD_BENCH=ON "
             "-DCMAKE_BUILD_TYPE=Release and pass --build DIR")

env = dict(base_env, QUADRA_THREADS=str(args.threads), QUADRA_BENCH_DTYPE=args.dtype)
peer_env = dict(base_env, OMP_NUM_THREADS=str(args.threads))


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


# Both sides report the median and the minimum of many short timings: PyTorch of single calls,
# quadra of REPETITIONS repetitions of a few calls each (Google Benchmark times batches of calls;
# a single batch's mean would let one preempted call, frequent on a shared VM, count for quadra
# but not for the peer's median).
REPETITIONS = 10


def run_quadra():
    out = subprocess.run(
        [str(exe), "--benchmark_format=json", f"--benchmark_filter={args.filter or '.'}",
         f"--benchmark_min_time={args.budget / REPETITIONS}",
         f"--benchmark_repetitions={REPETITIONS}"],
        env=env, check=True, capture_output=True, text=True).stdout
    report = json.loads(out)
    samples = {}
    for b in report["benchmarks"]:
        if b.get("run_type", "iteration") != "iteration":
            continue  # Google Benchmark's own aggregates
        op, model, batch = b["run_name"].split("/")[:3]
        ms = b["real_time"] if b["time_unit"] == "ms" else b["real_time"] / 1e6
        samples.setdefault((op, model, int(batch)), []).append(ms)
    times = {key: (median(v), min(v)) for key, v in samples.items()}
    return times, report["context"]


def run_peer():
    peer = subprocess.run(
        ["/usr/bin/python3", str(ROOT / "bench" / "torch_peer.py"), f"--threads={args.threads}",
         f"--dtype={args.dtype}", f"--filter={args.filter}", f"--budget={args.budget}"],
        env=peer_env, check=True, capture_output=True, text=True)
    sys.stderr.write(peer.stderr)
    times, context = {}, {}
    for line in peer.stdout.splitlines():
        record = json.loads(line)
        if "context" in record:
            context = record["context"]
        else:
            times[(record["op"], record["model"], record["batch"])] = (record["median_ms"],
                                                                      record["min_ms"])
    return times, context


# Rounds alternate the two sides (quadra first in odd rounds, PyTorch first in even ones), so
# that a slow spell of the machine, common on shared VMs, does not land on one side only. Each
# op's speed-up is the median over rounds of that round's ratio; the range shows the spread.
quadra_rounds, torch_rounds = [], []
context, peer_context = {}, {}
for r in range(args.rounds):
    if r % 2 == 0:
        times, context = run_quadra()
        quadra_rounds.append(times)
        times, peer_context = run_peer()
        torch_rounds.append(times)
    else:
        times, peer_context = run_peer()
        torch_rounds.append(times)
        times, context = run_quadra()
        quadra_rounds.append(times)


print(f"quadra: gemm kernel {context.get('gemm_kernel')}, {context.get('quadra_threads')} threads, "
      f"{context.get('dtype')}; PyTorch {peer_context.get('torch')}, {peer_context.get('threads')} "
      f"threads, SGEMM {peer_context.get('sgemm_gflops')} GFLOP/s; "
      f"malloc {'default' if args.plain_malloc else 'tuned (both)'}; {args.rounds} round(s); "
      f"load {os.getloadavg()[0]:.1f}")
print("times: medians over rounds of each round's median; speed-up: median over rounds of the "
      "ratio of medians (range over rounds); best: ratio of the two sides' fastest runs")
print(f"{'op':<16} {'model':<5} {'batch':>5} {'quadra ms':>10} {'torch ms':>10} {'speed-up':>9} "
      f"{'range':>13} {'best':>7}  target")
failed = 0
for key in sorted(quadra_rounds[0], key=lambda k: (k[1], k[2], k[0])):
    op, model, batch = key
    both = [(q[key], t[key]) for q, t in zip(quadra_rounds, torch_rounds) if key in q and key in t]
    if not both:
        continue
    pairs = [(q[0], t[0]) for q, t in both]
    ratios = [t / q for q, t in pairs]
    ratio = median(ratios)
    best = min(t[1] for _, t in both) / min(q[1] for q, _ in both)
    spread = f"{min(ratios):.2f}-{max(ratios):.2f}x" if len(ratios) > 1 else ""
    target = ""
    if args.dtype == "float32" and args.threads == 2 and model == "mlp":
        need = TARGETS_128.get(op) if batch == 128 else 1.0
        if need is not None:
            ok = ratio >= need
            failed += not ok
            target = f">= {need:g}x {'ok' if ok else 'MISSED'}"
    print(f"{op:<16} {model:<5} {batch:>5} {median([q for q, _ in pairs]):>10.3f} "
          f"{median([t for _, t in pairs]):>10.3f} {ratio:>8.2f}x {spread:>13} {best:>6.2f}x  {target}")
if failed:
    print(f"{failed} target(s) missed")
