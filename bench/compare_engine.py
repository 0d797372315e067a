#!/usr/bin/python3
"""Runs bench_engine (quadra) and torch_peer.py (PyTorch) with the same thread count and dtype,
and prints the side-by-side table with the speed-up (PyTorch time / quadra time; > 1: quadra
is faster) and the issue's targets.

Usage: bench/compare_engine.py [--build DIR] [--threads N] [--dtype float32|float64]
                               [--filter REGEX] [--budget SECONDS]
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
# Targets of issue 3 (float32, 2 threads): minimum speed-up per op at batch 128; at batch 1024
# nothing may be slower than PyTorch.
TARGETS_128 = {"grad": 1.2, "ggnvp_cached": 1.5, "hvp_cached": 1.5, "persample_grad": 10.0}

parser = argparse.ArgumentParser()
parser.add_argument("--build", default=str(ROOT / "build" / "release"))
parser.add_argument("--threads", type=int, default=os.cpu_count())
parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
parser.add_argument("--filter", default="")
parser.add_argument("--budget", type=float, default=1.0)
parser.add_argument("--plain-malloc", action="store_true",
                    help="do not raise glibc's mmap/trim thresholds (see below)")
args = parser.parse_args()

# Both sides allocate their activations afresh for every gradient; with glibc's default
# thresholds every such allocation is returned to the kernel and page-faulted back in, which
# costs quadra about 40 % of a batch-128 gradient. The same tunables go to both processes.
MALLOC = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"
base_env = dict(os.environ)
if not args.plain_malloc:
    base_env["GLIBC_TUNABLES"] = MALLOC

exe = pathlib.Path(args.build) / "bin" / "bench_engine"
if not exe.exists():
    sys.exit(f"compare_engine: {exe} not found; build with -DQUADRA_BUILD_BENCH=ON "
             "-DCMAKE_BUILD_TYPE=Release and pass --build DIR")

env = dict(base_env, QUADRA_THREADS=str(args.threads), QUADRA_BENCH_DTYPE=args.dtype)
quadra_out = subprocess.run(
    [str(exe), "--benchmark_format=json", f"--benchmark_filter={args.filter or '.'}",
     f"--benchmark_min_time={args.budget}"],
    env=env, check=True, capture_output=True, text=True).stdout
report = json.loads(quadra_out)
quadra = {}
for b in report["benchmarks"]:
    op, model, batch = b["run_name"].split("/")[:3]
    quadra[(op, model, int(batch))] = b["real_time"] if b["time_unit"] == "ms" else b["real_time"] / 1e6
context = report["context"]

peer_env = dict(base_env, OMP_NUM_THREADS=str(args.threads))
peer = subprocess.run(
    ["/usr/bin/python3", str(ROOT / "bench" / "torch_peer.py"), f"--threads={args.threads}",
     f"--dtype={args.dtype}", f"--filter={args.filter}", f"--budget={args.budget}"],
    env=peer_env, check=True, capture_output=True, text=True)
torch_times = {}
peer_context = {}
for line in peer.stdout.splitlines():
    record = json.loads(line)
    if "context" in record:
        peer_context = record["context"]
        continue
    torch_times[(record["op"], record["model"], record["batch"])] = record["median_ms"]
sys.stderr.write(peer.stderr)

print(f"quadra: gemm kernel {context.get('gemm_kernel')}, {context.get('quadra_threads')} threads, "
      f"{context.get('dtype')}; PyTorch {peer_context.get('torch')}, {peer_context.get('threads')} "
      f"threads, SGEMM {peer_context.get('sgemm_gflops')} GFLOP/s; "
      f"malloc {'default' if args.plain_malloc else 'tuned (both)'}; load {os.getloadavg()[0]:.1f}")
print(f"{'op':<16} {'model':<5} {'batch':>5} {'quadra ms':>10} {'torch ms':>10} {'speed-up':>9}  target")
failed = 0
for key in sorted(quadra, key=lambda k: (k[1], k[2], k[0])):
    op, model, batch = key
    q = quadra[key]
    t = torch_times.get(key)
    if t is None:
        continue
    ratio = t / q
    target = ""
    if args.dtype == "float32" and args.threads == 2 and model == "mlp":
        need = TARGETS_128.get(op) if batch == 128 else 1.0
        if need is not None:
            ok = ratio >= need
            failed += not ok
            target = f">= {need:g}x {'ok' if ok else 'MISSED'}"
    print(f"{op:<16} {model:<5} {batch:>5} {q:>10.3f} {t:>10.3f} {ratio:>8.2f}x  {target}")
if failed:
    print(f"{failed} target(s) missed")
