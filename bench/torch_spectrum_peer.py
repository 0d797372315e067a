#!/usr/bin/python3
"""PyTorch peer of bench/bench_spectrum.cpp: top-20 GGN eigenpairs (scipy's eigsh on a
LinearOperator of PyTorch GGN-vector products) and 50 CG iterations on (G + lambda I) x = -g,
for the MLP 784-512-256-10 (tanh) with batch sizes 128 and 1024.

Each GGN·v uses PyTorch's fastest formulation (bench/torch_peer.py): the forward pass and a
create_graph VJP are built once per batch, then Jv by the double-VJP trick, the analytic
softmax Hessian and one VJP per product. Timings include that setup, as the C++ side includes
binding the batch. The script also writes the problem (state_dict weights, inputs, labels) to
--out so that the C++ benchmark measures the very same matrices, and the eigenvalues it found,
so that accuracy can be compared.
Prints one JSON object per line: {"op", "batch", "seconds", "products"?, "eigenvalues"?}.
"""
import argparse
import json
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=os.cpu_count())
parser.add_argument("--out", required=True, help="directory for the shared problem files")
parser.add_argument("--batches", default="128,1024")
parser.add_argument("--tolerance", type=float, default=1e-6, help="eigsh tol")
parser.add_argument("--damping", type=float, default=1e-3)
parser.add_argument("--repeats", type=int, default=3)
args = parser.parse_args()
os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from scipy.sparse.linalg import LinearOperator, eigsh  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.Tanh(), torch.nn.Linear(512, 256),
                            torch.nn.Tanh(), torch.nn.Linear(256, 10))
params = list(model.parameters())
shapes = [p.shape for p in params]
sizes = [p.numel() for p in params]
os.makedirs(args.out, exist_ok=True)
np.savez(os.path.join(args.out, "weights.npz"),
         **{k: v.detach().numpy() for k, v in model.state_dict().items()})


def best(fn):
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def ggn_operator(x, y):
    """Setup once per batch (forward + create_graph VJP), then the fastest GGN·v."""
    n = x.shape[0]
    out = model(x)
    ws = torch.zeros_like(out, requires_grad=True)
    gs = torch.autograd.grad(out, params, ws, create_graph=True)
    prob = torch.softmax(out.detach(), dim=1)

    def product(v):
        chunks = [c.view(s) for c, s in zip(torch.split(v, sizes), shapes)]
        jv = torch.autograd.grad(gs, ws, chunks, retain_graph=True)[0]
        u = (prob * jv - prob * (prob * jv).sum(1, keepdim=True)) / n
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(out, params, u, retain_graph=True)])

    return product


for batch in [int(b) for b in args.batches.split(",")]:
    generator = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 784, generator=generator)
    y = torch.randint(0, 10, (batch,), generator=generator)
    np.save(os.path.join(args.out, f"x_{batch}.npy"), x.numpy())
    np.save(os.path.join(args.out, f"y_{batch}.npy"), y.numpy().astype(np.int64))
    dim = sum(sizes)

    def top20():
        product = ggn_operator(x, y)
        count = [0]  # operator products, the noise-free cost measure

        def matvec(v):
            count[0] += 1
            return product(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32).reshape(-1))).numpy()

        op = LinearOperator((dim, dim), dtype=np.float32, matvec=matvec)
        values, _ = eigsh(op, k=20, which="LA", tol=args.tolerance)
        return np.sort(values)[::-1], count[0]

    seconds, (values, products) = best(top20)
    print(json.dumps({"op": "top20", "batch": batch, "seconds": seconds, "products": products,
                      "eigenvalues": [float(v) for v in values]}), flush=True)

    def cg50():
        product = ggn_operator(x, y)
        loss = F.cross_entropy(model(x), y)
        b = -torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
        xk = torch.zeros_like(b)
        r = b.clone()
        p = r.clone()
        rr = r.dot(r)
        for _ in range(50):
            ap = product(p) + args.damping * p
            alpha = rr / p.dot(ap)
            xk += alpha * p
            r -= alpha * ap
            rr_next = r.dot(r)
            p = r + (rr_next / rr) * p
            rr = rr_next
        return float(rr.sqrt())

    seconds, residual = best(cg50)
    print(json.dumps({"op": "cg50", "batch": batch, "seconds": seconds, "residual": residual}), flush=True)
