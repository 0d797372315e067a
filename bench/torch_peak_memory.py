#!/usr/bin/python3
"""PyTorch side of bench/peak_memory.cpp: one product on the example ResNet-8 (examples/resnet,
eval mode, 3x32x32 inputs, cross-entropy, float32) in this process, and the growth of the peak
resident set (getrusage's ru_maxrss) over the resident set after loading: the model, inputs,
labels and direction, and a warm-up of the same product on a batch of one sample (libraries,
oneDNN's kernels, the thread pool).

Usage: torch_peak_memory.py PRODUCT [--batch N] [--threads N]
PRODUCT: gradient (forward + autograd.grad), hessian (forward, gradient with create_graph, one
grad(g, params, v)), persample (functorch's vmap of grad, forward and backward included).
Prints one JSON object.
"""
import argparse
import json
import os
import pathlib
import resource
import sys

parser = argparse.ArgumentParser()
parser.add_argument("product", choices=["gradient", "hessian", "persample"])
parser.add_argument("--batch", type=int, default=128)
parser.add_argument("--threads", type=int, default=os.cpu_count())
args = parser.parse_args()
os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

import torch  # noqa: E402  (after OMP_NUM_THREADS)
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "examples" / "resnet"))
from resnet import ResNet  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(0)
model = ResNet(1, 16, 10, in_channels=3).eval()
params = list(model.parameters())
x_all = torch.rand(args.batch, 3, 32, 32)
y_all = torch.randint(0, 10, (args.batch,))
v = [torch.randn_like(p) for p in params]


def product(n):
    x, y = x_all[:n], y_all[:n]
    if args.product == "gradient":
        loss = F.cross_entropy(model(x), y)
        return torch.autograd.grad(loss, params)
    if args.product == "hessian":
        loss = F.cross_entropy(model(x), y)
        g = torch.autograd.grad(loss, params, create_graph=True)
        return torch.autograd.grad(g, params, v)
    from functorch import grad, make_functional_with_buffers, vmap
    fmodel, weights, buffers = make_functional_with_buffers(model)

    def loss(w, b, xi, yi):
        return F.cross_entropy(fmodel(w, b, xi.unsqueeze(0)), yi.unsqueeze(0))

    grads = vmap(grad(loss), in_dims=(None, None, 0, 0))(weights, buffers, x, y)
    return [torch.cat([g.reshape(n, -1) for g in grads], dim=1)]


def current_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


product(1)
base = current_kib()
out = product(args.batch)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"product": args.product, "batch": args.batch, "baseline_kib": base,
                  "peak_kib": peak, "growth_kib": peak - base,
                  "checksum": float(sum(t.sum() for t in out))}))
