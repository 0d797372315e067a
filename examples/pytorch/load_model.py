#!/usr/bin/python3
"""A quadra model file (model.npz, best.npz, a checkpoint's model) as a PyTorch module with its
input preprocessing, using NumPy and PyTorch only:

    module, preprocess = load_model("runs/train/model.npz")
    probabilities = module(preprocess(raw_images)).softmax(1)   # raw uint8 or float inputs

The file holds the state_dict (names and layouts as torch.nn.Sequential), the layer spec
(__spec__), the input shape (__input_shape__) and the preprocessing the model was trained with:
x = (raw / 255 for uint8, else raw - __shift__) * __scale__ (__normalize__ names the kind).
batchnorm becomes BatchNorm1d/2d with the file's running statistics (eval mode uses them, as
quadra does), layernorm LayerNorm over the whole sample, groupnorm(G) GroupNorm."""
import numpy as np
import torch

PLAIN = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
         "gelu": torch.nn.GELU, "softplus": torch.nn.Softplus, "flatten": torch.nn.Flatten}


class SampleNorm(torch.nn.Module):
    """layernorm / groupnorm(G) without affine parameters (their shape is the input's)."""

    def __init__(self, groups, eps):
        super().__init__()
        self.groups, self.eps = groups, eps

    def forward(self, x):
        if self.groups is None:
            return torch.nn.functional.layer_norm(x, x.shape[1:], eps=self.eps)
        return torch.nn.functional.group_norm(x, self.groups, eps=self.eps)


def load_model(path):
    f = np.load(path)
    weights = {k: torch.from_numpy(f[k]) for k in f.files if not k.startswith("__")}
    layers = []
    image = len(f["__input_shape__"]) == 3  # until flatten: BatchNorm2d rather than 1d
    for i, token in enumerate(bytes(f["__spec__"]).decode().split()):
        name, _, args = token.partition("(")
        args = [a for a in args.rstrip(")").split(",") if a]
        kw = dict(a.split("=") for a in args if "=" in a)
        w, bias = weights.get(f"{i}.weight"), f"{i}.bias" in weights
        eps, affine = float(kw.get("eps", 1e-5)), kw.get("affine", "true") == "true"
        if name in ("linear", "flatten"):
            image = False
        if name == "linear":
            layers.append(torch.nn.Linear(w.shape[1], w.shape[0], bias=bias))
        elif name == "batchnorm":
            norm = torch.nn.BatchNorm2d if image else torch.nn.BatchNorm1d
            layers.append(norm(len(weights[f"{i}.running_mean"]), eps=eps,
                               momentum=float(kw.get("momentum", 0.1)), affine=affine))
        elif name == "layernorm":
            layers.append(torch.nn.LayerNorm(list(w.shape), eps=eps) if affine else SampleNorm(None, eps))
        elif name == "groupnorm":
            groups = int(args[0])
            layers.append(torch.nn.GroupNorm(groups, len(w), eps=eps) if affine else SampleNorm(groups, eps))
        elif name == "conv":
            layers.append(torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], bias=bias,
                                          stride=int(kw.get("stride", 1)),
                                          padding=int(kw.get("pad", 0))))
        elif name in ("maxpool", "avgpool"):
            k = int(args[0])
            pool = torch.nn.MaxPool2d if name == "maxpool" else torch.nn.AvgPool2d
            layers.append(pool(k, stride=int(kw.get("stride", k)), padding=int(kw.get("pad", 0))))
        elif name == "leakyrelu":
            layers.append(torch.nn.LeakyReLU(float(args[0]) if args else 0.01))
        else:
            layers.append(PLAIN[name]())
    dtype = next(v.dtype for v in weights.values() if v.is_floating_point())
    module = torch.nn.Sequential(*layers).to(dtype)
    module.load_state_dict(weights)
    shape = [int(d) for d in f["__input_shape__"]]
    shift = torch.from_numpy(f["__shift__"]) if "__shift__" in f.files else torch.zeros(0)
    scale = torch.from_numpy(f["__scale__"]) if "__scale__" in f.files else torch.zeros(0)

    def preprocess(raw):
        x = torch.as_tensor(raw)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        x = x.reshape(len(x), -1)
        if len(shift):
            x = (x - shift) * scale
        return x.reshape([len(x)] + shape).to(dtype)

    return module.eval(), preprocess
