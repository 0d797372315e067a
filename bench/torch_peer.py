#!/usr/bin/python3
"""PyTorch peer of bench/bench_engine.cpp: the same operations, models, batches, dtype and thread
count, each in its fastest PyTorch 1.13 formulation (see /work/shared/perf-baseline.md):
  grad            forward + cross-entropy + autograd.grad
  ggnvp_cached    forward and a create_graph vjp built once; per call Jv by the double-vjp trick,
                  the analytic softmax Hessian, and a vjp (retain_graph)
  hvp_cached      gradient graph built once; per call one grad(g, params, v)
  efvp_cached     the faster of: as ggnvp_cached with the empirical-Fisher top r (rᵀ Jv); or
                  from the layer-output adjoints of one cached backward pass (rᵀ Jv as a sum of
                  per-layer tangents, then one local vjp per layer)
  persample_grad  forward, one backward to the layer outputs, per-layer outer products
                  (einsum; conv via unfold), written into one (B, P) tensor
  ggn_diag        C backward passes of the loss Hessian's factor columns, squared per-sample
                  gradients summed (Linear: squared GEMM; conv: unfold)
  ef_diag         one backward, squared per-sample gradients summed
  kfac_*          A from layer inputs, S from 1 (empirical, mc1) or C (type2) backward passes
The ResNet of examples/resnet (ResNet-8, width 16, 3x32x32 inputs, BatchNorm with its running
statistics: the model in eval mode) has grad, ggnvp_cached, hvp_cached and persample_grad, the
last by functorch's vmap of grad over a functional copy of the model.
Prints one JSON object per line: {"op", "model", "batch", "median_ms", "min_ms", "reps"}.
Usage: torch_peer.py [--threads N] [--dtype float32|float64] [--filter REGEX]
Needs Debian's OpenBLAS (libopenblas0-openmp); the script measures SGEMM and warns when slow.
"""
import argparse
import json
import os
import re
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=os.cpu_count())
parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
parser.add_argument("--filter", default="")
parser.add_argument("--budget", type=float, default=1.0, help="seconds per measurement")
args = parser.parse_args()
os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

import pathlib  # noqa: E402

import torch  # noqa: E402  (after OMP_NUM_THREADS)
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "examples" / "resnet"))
from resnet import ResNet  # noqa: E402

torch.set_num_threads(args.threads)
DT = torch.float32 if args.dtype == "float32" else torch.float64
torch.set_default_dtype(DT)


def timeit(fn, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < 7 or (time.perf_counter() - start < args.budget and len(times) < 51):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2], times[0], len(times)


def check_blas():
    a = torch.randn(1024, 1024, dtype=torch.float32)
    median, _, _ = timeit(lambda: a @ a)
    gflops = 2 * 1024 ** 3 / (median * 1e-3) / 1e9
    if gflops < 20:
        print(f"torch_peer: WARNING: SGEMM reaches only {gflops:.1f} GFLOP/s: reference BLAS? "
              "install libopenblas0-openmp", file=sys.stderr)
    return gflops


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.Tanh(), torch.nn.Linear(512, 256),
                               torch.nn.Tanh(), torch.nn.Linear(256, 10))


def cnn():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                               torch.nn.Conv2d(16, 32, 3), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
                               torch.nn.Flatten(), torch.nn.Linear(1152, 10))


def resnet():
    return ResNet(1, 16, 10, in_channels=3).eval()


SHAPES = {"mlp": (784,), "cnn": (1, 28, 28), "resnet": (3, 32, 32)}


class Case:
    def __init__(self, name, n):
        torch.manual_seed(0)
        self.model = {"mlp": mlp, "cnn": cnn, "resnet": resnet}[name]().to(DT)
        self.params = list(self.model.parameters())
        shape = (n,) + SHAPES[name]
        self.x = torch.rand(*shape)
        self.y = torch.randint(0, 10, (n,))
        self.v = [torch.randn_like(p) for p in self.params]
        self.n = n
        self.layers = [m for m in self.model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]

    def grad(self):
        loss = F.cross_entropy(self.model(self.x), self.y)
        return torch.autograd.grad(loss, self.params)

    # Forward with the layer inputs and outputs kept, for per-sample style quantities.
    def forward_keep(self):
        inputs, outputs = [], []
        h = self.x
        for m in self.model:
            if m in self.layers:
                inputs.append(h)
                h = m(h)
                outputs.append(h)
            else:
                h = m(h)
        return h, inputs, outputs

    def per_sample_from(self, inputs, deltas, square=False, out=None):
        """Per-sample parameter gradients (or their squares summed) from layer inputs/deltas."""
        pieces = []
        for m, a, d in zip(self.layers, inputs, deltas):
            if isinstance(m, torch.nn.Linear):
                if square:
                    pieces.append(((d * d).T @ (a * a)).reshape(-1))
                    if m.bias is not None:
                        pieces.append((d * d).sum(0))
                    continue
                w = torch.einsum("bo,bi->boi", d, a).reshape(self.n, -1)
                b = d if m.bias is not None else None
            else:
                cols = F.unfold(a, m.kernel_size, padding=m.padding, stride=m.stride)  # n, q, T
                dd = d.reshape(self.n, d.shape[1], -1)                                 # n, o, T
                g = torch.einsum("not,nqt->noq", dd, cols).reshape(self.n, -1)
                gb = dd.sum(2) if m.bias is not None else None
                if square:
                    pieces.append((g * g).sum(0))
                    if gb is not None:
                        pieces.append((gb * gb).sum(0))
                    continue
                w, b = g, gb
            pieces.append(w)
            if b is not None:
                pieces.append(b)
        if square:
            return torch.cat(pieces)
        return torch.cat(pieces, dim=1, out=out) if out is not None else torch.cat(pieces, dim=1)


def graph_ops(case):
    """The products any model has: gradient, GGN-vector and Hessian-vector on cached graphs."""
    model, params, x, y, n = case.model, case.params, case.x, case.y, case.n
    out = model(x)
    ws = torch.zeros_like(out, requires_grad=True)
    gs = torch.autograd.grad(out, params, ws, create_graph=True)
    prob = torch.softmax(out.detach(), dim=1)

    def ggnvp():
        jv = torch.autograd.grad(gs, ws, case.v, retain_graph=True)[0]
        u = (prob * jv - prob * (prob * jv).sum(1, keepdim=True)) / n
        return torch.autograd.grad(out, params, u, retain_graph=True)

    g = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)

    def hvp():
        return torch.autograd.grad(g, params, case.v, retain_graph=True)

    return {"grad": case.grad, "ggnvp_cached": ggnvp, "hvp_cached": hvp}


def resnet_ops(case):
    from functorch import grad, make_functional_with_buffers, vmap
    result = graph_ops(case)
    fmodel, weights, buffers = make_functional_with_buffers(case.model)

    def loss(w, b, xi, yi):
        return F.cross_entropy(fmodel(w, b, xi.unsqueeze(0)), yi.unsqueeze(0))

    per_sample = vmap(grad(loss), in_dims=(None, None, 0, 0))

    def persample():
        grads = per_sample(weights, buffers, case.x, case.y)
        return torch.cat([g.reshape(case.n, -1) for g in grads], dim=1)

    # vmap computes forward and backward too: quadra's persample_full, not its cached variant.
    result["persample_grad"] = persample
    result["persample_full"] = persample
    return result


def ops(case):
    model, params, x, y, n = case.model, case.params, case.x, case.y, case.n
    result = graph_ops(case)

    out = model(x)
    ws = torch.zeros_like(out, requires_grad=True)
    gs = torch.autograd.grad(out, params, ws, create_graph=True)
    prob = torch.softmax(out.detach(), dim=1)
    resid = prob.clone()
    resid[torch.arange(n), y] -= 1

    def efvp_network():
        jv = torch.autograd.grad(gs, ws, case.v, retain_graph=True)[0]
        u = resid * (resid * jv).sum(1, keepdim=True) / n
        return torch.autograd.grad(out, params, u, retain_graph=True)

    # The same product from the layer-output adjoints of one cached backward pass (quadra's
    # formulation): g_n.v = sum over layers of <delta_n, layer(a_n; v)>, then one local vjp per
    # layer on its detached input. No pass through the network per call.
    logits_k, inputs_k, outputs_k = case.forward_keep()
    deltas_k = torch.autograd.grad(F.cross_entropy(logits_k, y, reduction="sum"), outputs_k)
    inputs_k = [a.detach() for a in inputs_k]
    local_k = [m(a) for m, a in zip(case.layers, inputs_k)]
    pairs_k = list(zip(case.layers, inputs_k, deltas_k))
    vs_k = []
    offset = 0
    for m in case.layers:
        count = 2 if m.bias is not None else 1
        vs_k.append(case.v[offset:offset + count])
        offset += count

    def efvp_local():
        slope = 0
        for (m, a, d), vm in zip(pairs_k, vs_k):
            bias = vm[1] if len(vm) > 1 else None
            if isinstance(m, torch.nn.Conv2d):
                tangent = F.conv2d(a, vm[0], bias, stride=m.stride, padding=m.padding)
            else:
                tangent = F.linear(a, vm[0], bias)
            slope = slope + (d * tangent).reshape(n, -1).sum(1)
        slope = slope / n
        tops = [d * slope.reshape(n, *([1] * (d.dim() - 1))) for d in deltas_k]
        return torch.autograd.grad(local_k, params, tops, retain_graph=True)

    # Several formulations of one product: main() reports the fastest.
    result.update(efvp_cached={"network": efvp_network, "local": efvp_local})

    def persample():
        logits, inputs, outputs = case.forward_keep()
        deltas = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), outputs)
        return case.per_sample_from([a.detach() for a in inputs], deltas)

    def backward_columns(columns):
        """Layer-output adjoints for each top matrix in `columns` on one cached graph."""
        logits, inputs, outputs = case.forward_keep()
        res = []
        for k, top in enumerate(columns):
            res.append(torch.autograd.grad(logits, outputs, top, retain_graph=k + 1 < len(columns)))
        return [a.detach() for a in inputs], res

    def sqrt_columns():
        p = torch.softmax(model(x).detach(), dim=1)
        root = p.sqrt()
        cols = []
        for k in range(p.shape[1]):
            col = -root[:, k:k + 1] * p
            col[:, k] += root[:, k]
            cols.append(col)
        return cols

    def ggn_diag():
        inputs, adjs = backward_columns(sqrt_columns())
        return sum(case.per_sample_from(inputs, d, square=True) for d in adjs) / n

    def ef_diag():
        inputs, adjs = backward_columns([resid])
        return case.per_sample_from(inputs, adjs[0], square=True) / n

    def kfac(columns_fn, scale):
        def run():
            cols = columns_fn()
            inputs, adjs = backward_columns(cols)
            factors = []
            for i, m in enumerate(case.layers):
                a = inputs[i]
                if isinstance(m, torch.nn.Conv2d):
                    u = F.unfold(a, m.kernel_size, padding=m.padding, stride=m.stride)
                    t = u.shape[2]
                    if m.bias is not None:
                        u = torch.cat([u, torch.ones(n, 1, t)], dim=1)
                    u = u.transpose(1, 2).reshape(-1, u.shape[1])
                    A = u.T @ u / (n * t)
                    S = sum((d[i].transpose(1, 3).reshape(-1, d[i].shape[1]).T
                             @ d[i].transpose(1, 3).reshape(-1, d[i].shape[1])) for d in adjs) * scale / n
                else:
                    if m.bias is not None:
                        a = torch.cat([a, torch.ones(n, 1)], dim=1)
                    A = a.T @ a / n
                    S = sum(d[i].T @ d[i] for d in adjs) * scale / n
                factors.append((A, S))
            return factors
        return run

    def mc_columns():
        p = torch.softmax(model(x).detach(), dim=1)
        sampled = torch.multinomial(p, 1).squeeze(1)
        r = p.clone()
        r[torch.arange(n), sampled] -= 1
        return [r]

    result.update(persample_grad=persample, ggn_diag=ggn_diag, ef_diag=ef_diag,
                  kfac_empirical=kfac(lambda: [resid], 1.0), kfac_mc1=kfac(mc_columns, 1.0),
                  kfac_type2=kfac(sqrt_columns, 1.0))
    return result


OPS = ("grad", "ggnvp_cached", "hvp_cached", "efvp_cached", "persample_grad", "persample_full",
       "ggn_diag",
       "ef_diag", "kfac_empirical", "kfac_mc1", "kfac_type2")


def main():
    gflops = check_blas()
    print(json.dumps({"context": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                                  "dtype": args.dtype, "sgemm_gflops": round(gflops, 1)}}), flush=True)
    pattern = re.compile(args.filter)
    for model in ("mlp", "cnn", "resnet"):
        for n in ((128,) if model == "resnet" else (128, 1024)):
            if not any(pattern.search(f"{op}/{model}/{n}") for op in OPS):
                continue
            case = Case(model, n)
            for op, fn in (resnet_ops(case) if model == "resnet" else ops(case)).items():
                name = f"{op}/{model}/{n}"
                if not pattern.search(name):
                    continue
                variants = fn if isinstance(fn, dict) else {"": fn}
                timings = {v: timeit(f, warmup=1 if op == "persample_grad" else 2)
                           for v, f in variants.items()}
                variant = min(timings, key=lambda v: timings[v][0])
                median, best, reps = timings[variant]
                record = {"op": op, "model": model, "batch": n, "median_ms": round(median, 4),
                          "min_ms": round(best, 4), "reps": reps}
                if variant:
                    record["variant"] = variant
                print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
