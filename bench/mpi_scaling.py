#!/usr/bin/python3
"""Measures a debiased-CG training step under mpirun and fits the strong-scaling cost model of
docs/mpi.md to it: prints the measured step times at 1..R ranks next to the model's prediction,
and the model's efficiency at 8, 64 and 512 ranks on 10 and 100 Gb/s networks.

Usage: bench/mpi_scaling.py [--build DIR] [--model mlp|resnet] [--ranks 4] [--rounds 3] [--steps 8]

The model of one step with R ranks of one thread each, for a fixed global batch of B samples:

    T(R) = (k a B / R + s) * ceil(R / cores)  +  T_comm(R)

a is the per-sample compute time of one busy core (every draw of the step is split across
ranks), s the work every rank repeats whole (the solver's and debiasing plugin's vector algebra
on the parameters, the sampler), and ceil(R / cores) the oversubscription of this machine's
cores (the ranks meet at every collective, so the core running the most ranks sets the pace). a and s are fitted from one-rank runs at two batch sizes (T(1) = a B + s, linear in B).
k (1 for one rank) is what a core loses when its neighbour is busy too (shared caches, memory
bandwidth, clock): fitted from one process with two threads, T = k a B / 2 + s, which sends no
messages at all. The
communication of a step is read from the 2-rank run's manifest: L sums of the parameters' size
(bytes_sent_per_step / parameter bytes) and c collective calls in all. quadra's sum of n bytes
(core/src/dist/communicator.cpp) is an all-to-all of segments followed by an all-gather:

    T_sum(n) = 2 (R - 1) alpha + 2 (R - 1) / R * n / beta,

and every other collective (small sums, broadcasts, agreements) costs ceil(log2 R) alpha. The
predictions for 1..R ranks use shared-memory alpha, beta (this machine); those for 8, 64 and 512
ranks assume one rank per core of this machine's speed (k included: the cores of a node are busy
together), connected by the networks below; efficiency is T(1) / (R T(R)).

--model resnet replaces the linear fit by measured shares: a convolutional network's cost per
sample depends on how many samples a rank holds (the engine's chunks of samples and their
caches, its memory), so the compute term is the one-rank, one-thread step measured at the
rank's share,

    T(R) = k T1(ceil(B / R)) * ceil(R / cores)  +  T_comm(R),

k is then the step of one-rank runs at B / cores, one per core at the same time, over T1 at
that share, and T(1) at the predictions'
larger batch is extrapolated linearly from one-rank steps at two large batches (where the
chunks, and with them the cost per sample, no longer change).
"""
import argparse
import csv
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESNET = ("conv(16,3,stride=1,pad=1,bias=false) batchnorm relu "
          "residual(conv(16,3,stride=1,pad=1,bias=false) batchnorm relu "
          "conv(16,3,stride=1,pad=1,bias=false) batchnorm) relu "
          "residual(conv(32,3,stride=2,pad=1,bias=false) batchnorm relu "
          "conv(32,3,stride=1,pad=1,bias=false) batchnorm, "
          "shortcut=conv(32,1,stride=2,pad=0,bias=false) batchnorm) relu "
          "residual(conv(64,3,stride=2,pad=1,bias=false) batchnorm relu "
          "conv(64,3,stride=1,pad=1,bias=false) batchnorm, "
          "shortcut=conv(64,1,stride=2,pad=0,bias=false) batchnorm) relu "
          "globalavgpool flatten linear(10)")
# model: (spec, input shape, the batch of the validation, the smaller batch of the linear fit or
# None for measured shares, the batch of the predictions)
MODELS = {
    "mlp": ("linear(256) tanh linear(10)", "784", 10000, 2500, 10000),
    "resnet": (RESNET, "1x28x28", 256, None, 4096),
}
# (name, alpha seconds, beta bytes per second)
SHARED_MEMORY = ("shared memory", 2e-6, 5e9)
NETWORKS = [("10 Gb/s Ethernet", 20e-6, 1.25e9), ("100 Gb/s InfiniBand", 2e-6, 12.5e9)]
CORES = os.cpu_count() or 1


def train_command(build, model, batch, ranks, out, steps, threads=1):
    spec, shape = MODELS[model][:2]
    command = [str(build / "bin" / "quadra"), "train", "--config",
               str(ROOT / "examples/fashion-mnist/train-cg-debiased.ini"),
               "--set", f"model.spec={spec}", "--set", f"model.input_shape={shape}",
               "--set", f"train.batch_size={batch}",
               # Exactly max_iterations (10) CG iterations in every step: the same work per
               # step whatever the trajectory.
               "--set", "solver.tolerance=0", "--set", "solver.martens_rule=false", "--set", f"train.max_steps={steps}",
               "--set", "train.max_seconds=0", "--set", "train.eval_every=100000",
               "--set", "train.checkpoint_every=100000", "--set", f"train.threads={threads}",
               "--set", f"train.out={out}"]
    if ranks > 1:
        # More ranks than cores: a rank waiting in a collective yields its core to the others
        # instead of spinning on it.
        yields = ["--mca", "mpi_yield_when_idle", "1"] if ranks > CORES else []
        command = ["mpirun", "--oversubscribe", *yields, "-np", str(ranks)] + command
    return command


ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def step_seconds(out):
    with open(pathlib.Path(out) / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    # Step 0 pays for first touches; the rest are alike.
    seconds = [sum(float(r[c]) for c in ("propose_seconds", "debias_seconds", "measure_seconds"))
               for r in rows[1:]]
    manifest = json.loads((pathlib.Path(out) / "manifest.json").read_text())
    return statistics.median(seconds), manifest


def train(build, model, batch, ranks, out, steps, threads=1):
    subprocess.run(train_command(build, model, batch, ranks, out, steps, threads), check=True,
                   stdout=subprocess.DEVNULL, env=ENV)
    return step_seconds(out)


def concurrent_seconds(build, model, batch, copies, steps):
    """The median step of `copies` one-rank, one-thread runs at the same time: each core busy,
    no messages."""
    with tempfile.TemporaryDirectory() as tmp:
        outs = [pathlib.Path(tmp) / f"run{i}" for i in range(copies)]
        runs = [subprocess.Popen(train_command(build, model, batch, 1, out, steps),
                                 stdout=subprocess.DEVNULL, env=ENV) for out in outs]
        for run in runs:
            if run.wait() != 0:
                sys.exit(f"mpi_scaling: a concurrent run failed ({run.args[0]})")
        return statistics.median(step_seconds(out)[0] for out in outs)


def measure(build, model, batch, ranks, rounds, steps, threads=1):
    times, manifest = [], None
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            t, manifest = train(build, model, batch, ranks, pathlib.Path(tmp) / "run", steps, threads)
            times.append(t)
    return statistics.median(times), manifest


def comm_seconds(ranks, large_sums, small_calls, vector_bytes, alpha, beta):
    if ranks == 1:
        return 0.0
    large = large_sums * (2 * (ranks - 1) * alpha + 2 * (ranks - 1) / ranks * vector_bytes / beta)
    return large + small_calls * math.ceil(math.log2(ranks)) * alpha


def print_predictions(t1, compute, large_sums, small_calls, vector_bytes):
    print("| ranks | network | step | compute | communication | efficiency |")
    print("|---|---|---|---|---|---|")
    for ranks in (8, 64, 512):
        for name, alpha, beta in NETWORKS:
            comm = comm_seconds(ranks, large_sums, small_calls, vector_bytes, alpha, beta)
            step = compute(ranks) + comm
            print(f"| {ranks} | {name} | {step * 1e3:.1f} ms | {compute(ranks) * 1e3:.1f} ms | "
                  f"{comm * 1e3:.1f} ms | {t1 / (ranks * step):.0%} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default=str(ROOT / "build/release"))
    parser.add_argument("--model", default="mlp", choices=sorted(MODELS))
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="steps per run (the first is not timed)")
    args = parser.parse_args()
    build = pathlib.Path(args.build)
    _, _, batch, small_batch, big_batch = MODELS[args.model]

    def one_rank(b, threads=1):
        return measure(build, args.model, b, 1, args.rounds, args.steps, threads)

    t_big, manifest = one_rank(batch)
    vector_bytes = manifest["model"]["parameters"] * (8 if manifest["precision"] == "float64" else 4)
    if small_batch is not None:
        # Linear in the batch: T1(b) = a b + s.
        t_threads, _ = one_rank(batch, threads=CORES)
        t_small, _ = one_rank(small_batch)
        a = (t_big - t_small) / (batch - small_batch)
        s = t_big - a * batch
        k = (t_threads - s) / (a * batch / CORES)

        def compute_at(b, many):
            return (k if many else 1.0) * a * b + s
        fit = (f"fit from 1 rank at batches {small_batch} and {batch}: a = {a * 1e6:.1f} us/sample, "
               f"s = {s * 1e3:.1f} ms/step; from 1 rank x {CORES} threads ({t_threads * 1e3:.0f} ms) "
               f"k = {k:.2f}")
        t1_big = compute_at(big_batch, False)
    else:
        # Measured shares: T1 at every share the table needs.
        shares = {batch: t_big}
        for ranks in [CORES] + list(range(2, args.ranks + 1)) + [8, 64, 512]:
            b = -(-(batch if ranks <= args.ranks else big_batch) // ranks)
            if b not in shares:
                shares[b] = one_rank(b)[0]
        # k: a rank's step at its share while every core runs one, over the step alone.
        half = -(-batch // CORES)
        t_busy = concurrent_seconds(build, args.model, half, CORES, args.steps)
        k = t_busy / shares[half]
        lo, hi = big_batch // 8, big_batch // 4
        for b in (lo, hi):
            if b not in shares:
                shares[b] = one_rank(b)[0]
        t1_big = shares[lo] + (big_batch - lo) * (shares[hi] - shares[lo]) / (hi - lo)

        def compute_at(b, many):
            return (k if many else 1.0) * shares[b]
        fit = ("one rank, one thread: " + ", ".join(f"T1({b}) = {t * 1e3:.0f} ms" for b, t in
                                                      sorted(shares.items()))
               + f"; T1({big_batch}) = {t1_big * 1e3:.0f} ms extrapolated from T1({lo}) and T1({hi}); "
               f"{CORES} such runs at once at {half}: {t_busy * 1e3:.0f} ms, k = {k:.2f}")

    measured = {1: t_big}
    traffic = None
    for ranks in range(2, args.ranks + 1):
        measured[ranks], m = measure(build, args.model, batch, ranks, args.rounds, args.steps)
        if traffic is None:
            large = m["bytes_sent_per_step"] / vector_bytes
            traffic = (large, max(0.0, m["collectives_per_step"] - large))
    large_sums, small_calls = traffic

    print(f"# {args.model}: {manifest['model']['parameters']} parameters, debiased CG "
          f"(examples/fashion-mnist/train-cg-debiased.ini, 10 CG iterations a step), global draws of {batch}, float32, "
          f"1 thread per rank, {CORES} cores; medians of {args.rounds} runs x {args.steps - 1} steps")
    print(f"# {fit}; per step {large_sums:.1f} sums of {vector_bytes / 1e6:.2f} MB"
          f" and {small_calls:.1f} other collectives")
    print()
    print("| ranks | measured step | model | speed-up measured |")
    print("|---|---|---|---|")
    _, alpha, beta = SHARED_MEMORY
    for ranks, t in measured.items():
        model = compute_at(-(-batch // ranks), ranks > 1) * math.ceil(ranks / CORES) + comm_seconds(
            ranks, large_sums, small_calls, vector_bytes, alpha, beta)
        print(f"| {ranks} | {t * 1e3:.0f} ms | {model * 1e3:.0f} ms | {measured[1] / t:.2f}x |")
    print()
    print(f"# predictions for global draws of {big_batch}")
    print_predictions(t1_big, lambda ranks: compute_at(-(-big_batch // ranks), True), large_sums,
                      small_calls, vector_bytes)


if __name__ == "__main__":
    sys.exit(main())
