#!/usr/bin/python3
"""Peak memory of each engine product on the example ResNet-8 (batch 128 by default, float32),
every product in a fresh process (bench/peak_memory.cpp), next to PyTorch's for the products
bench/torch_peak_memory.py has (gradient, Hessian-vector product, per-sample gradients). Prints a
Markdown table: the growth of the peak resident set over the process's resident set after
loading and a one-sample warm-up, in MB (10^6 bytes), with the same malloc policy for both sides
as bench/compare_engine.py.

Usage: bench/compare_memory.py [--build DIR] [--threads N] [--batch N] [--no-torch]
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
parser = argparse.ArgumentParser()
parser.add_argument("--build", default=str(ROOT / "build" / "release"))
parser.add_argument("--threads", type=int, default=os.cpu_count())
parser.add_argument("--batch", type=int, default=128)
parser.add_argument("--no-torch", action="store_true")
args = parser.parse_args()

exe = pathlib.Path(args.build) / "bin" / "peak_memory"
if not exe.exists():
    sys.exit(f"compare_memory: {exe} not found; build the target peak_memory "
             "(-DQUADRA_BUILD_BENCH=ON) and pass --build DIR")
env = dict(os.environ, QUADRA_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
           GLIBC_TUNABLES="glibc.malloc.mmap_threshold=33554432:"
                          "glibc.malloc.trim_threshold=1073741824:glibc.malloc.mmap_max=0")

PRODUCTS = [  # (quadra's name, row label, PyTorch's name or None)
    ("bind", "forward pass alone (bind)", None),
    ("gradient", "gradient", "gradient"),
    ("ggn", "GGN·v", None),
    ("hessian", "Hessian·v", "hessian"),
    ("ef", "empirical Fisher·v", None),
    ("persample", "per-sample gradients (P × N output included)", "persample"),
    ("ggn_diag", "exact GGN diagonal", None),
    ("ef_diag", "empirical Fisher diagonal", None),
    ("kfac_type2", "K-FAC factors (type-2)", None),
    ("kfac_empirical", "K-FAC factors (empirical)", None),
]


def run(cmd):
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    sys.stderr.write(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def mb(kib):
    return f"{kib * 1024 / 1e6:.0f} MB"


print(f"| product (ResNet-8, batch {args.batch}, float32, {args.threads} threads) | quadra | "
      "PyTorch | quadra / PyTorch |")
print("| --- | --- | --- | --- |")
for name, label, peer in PRODUCTS:
    q = run([str(exe), name, "resnet", str(args.batch)])
    t = None
    if peer and not args.no_torch:
        t = run(["/usr/bin/python3", str(ROOT / "bench" / "torch_peak_memory.py"), peer,
                 f"--batch={args.batch}", f"--threads={args.threads}"])
    ratio = f"{q['growth_kib'] / t['growth_kib']:.2f}" if t else ""
    print(f"| {label} | {mb(q['growth_kib'])} | {mb(t['growth_kib']) if t else ''} | {ratio} |",
          flush=True)
