#!/usr/bin/python3
"""PyTorch modules for quadra's layer specs, with quadra's parameter names.

    from quadra_modules import build
    module = build("conv(16,3,pad=1) relu residual(conv(16,3,pad=1) relu conv(16,3,pad=1)) "
                   "relu globalavgpool flatten linear(10)", [3, 32, 32])
    module.load_state_dict(...)   # a quadra .npz (model file or weights) loads unchanged

A spec is a torch.nn.Sequential whose element i is the spec's i-th token. A residual block,
residual(BRANCH...[,shortcut=SHORTCUT...]), is a Residual module computing
branch(x) + shortcut(x) with `branch` and `shortcut` two nn.Sequential (no `shortcut` for the
identity), so parameters are named like "2.branch.0.weight" and "4.shortcut.0.weight": the names
quadra gives them. globalavgpool is nn.AdaptiveAvgPool2d(1); dropout is nn.Dropout (quadra
computes at inference, where it is the identity: call module.eval()). batchnorm is
nn.BatchNorm1d on a flat input and nn.BatchNorm2d on an image, with its running statistics
(eval mode uses them, as quadra does); layernorm is nn.LayerNorm over the whole sample;
groupnorm(G) is nn.GroupNorm(G, C).

A layer with name=PATH (as an imported ONNX model's layers have) is registered under PATH
(nested modules for its dotted parts) instead of under its position, so its parameters and
buffers are named PATH.weight, PATH.running_mean, ...: the names of the original PyTorch model.
"""
import torch

ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
               "gelu": torch.nn.GELU, "softplus": torch.nn.Softplus}
ALIASES = {"conv2d": "conv", "maxpool2d": "maxpool", "avgpool2d": "avgpool",
           "leaky_relu": "leakyrelu"}


class Residual(torch.nn.Module):
    """branch(x) + shortcut(x); the shortcut is the identity when None."""

    def __init__(self, branch, shortcut=None):
        super().__init__()
        self.branch = branch
        if shortcut is not None:
            self.shortcut = shortcut
        self.has_shortcut = shortcut is not None

    def forward(self, x):
        return self.branch(x) + (self.shortcut(x) if self.has_shortcut else x)


class Named(torch.nn.Module):
    """Runs a layer registered elsewhere (under its name=PATH), without registering it here."""

    def __init__(self, layer):
        super().__init__()
        self.__dict__["layer"] = layer

    def forward(self, x):
        return self.layer(x)


class Container(torch.nn.Module):
    """A node of a name=PATH: holds the modules named under it."""


def _attach(root, path, module):
    parts = path.split(".")
    node = root
    for part in parts[:-1]:
        if not hasattr(node, part):
            node.add_module(part, Container())
        node = getattr(node, part)
    node.add_module(parts[-1], module)


def split_top(text, sep):
    """Splits text at `sep` characters outside parentheses (sep None: at whitespace)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and (ch == sep or (sep is None and ch.isspace())):
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if sep is not None or p.strip()]


def _bool(text):
    return text.strip().lower() in ("true", "1")


def _layer(token, shape, named):
    """One token as (module, output shape); a layer with name=PATH is appended to `named`."""
    module, out, path = _plain_layer(token, shape, named)
    if path is None:
        return module, out
    named.append((path, module))
    return Named(module), out


def _plain_layer(token, shape, named):
    name, _, inner = token.partition("(")
    name = name.lower()
    name = ALIASES.get(name, name)
    inner = inner[:-1] if inner.endswith(")") else inner
    if name == "residual":
        parts = split_top(inner, ",")
        branch, out = _sequential(parts[0], shape, named)
        shortcut = None
        for part in parts[1:]:
            key, _, value = part.partition("=")
            if key.strip() != "shortcut":
                raise ValueError(f"residual: unknown argument {key.strip()!r}")
            shortcut, other = _sequential(value, shape, named)
            if other != out:
                raise ValueError(f"residual: branch gives {out}, shortcut {other}")
        if shortcut is None and out != shape:
            raise ValueError(f"residual: branch gives {out}, identity shortcut {shape}")
        return Residual(branch, shortcut), out, None
    args = [a.strip() for a in inner.split(",") if a.strip()]
    pos = [a for a in args if "=" not in a]
    kw = {k.strip(): v.strip() for k, v in (a.split("=", 1) for a in args if "=" in a)}
    if "padding" in kw:
        kw["pad"] = kw.pop("padding")
    module, out = _module(name, token, pos, kw, shape)
    return module, out, kw.get("name")


def _module(name, token, pos, kw, shape):
    eps, affine = float(kw.get("eps", 1e-5)), _bool(kw.get("affine", "true"))
    if name in ("batchnorm", "batchnorm2d"):
        cls = torch.nn.BatchNorm2d if len(shape) == 3 else torch.nn.BatchNorm1d
        return cls(shape[0], eps=eps, momentum=float(kw.get("momentum", 0.1)), affine=affine), shape
    if name == "layernorm":
        return torch.nn.LayerNorm(shape, eps=eps, elementwise_affine=affine), shape
    if name == "groupnorm":
        return torch.nn.GroupNorm(int(pos[0]), shape[0], eps=eps, affine=affine), shape
    if name == "linear":
        return torch.nn.Linear(shape[0], int(pos[0]), bias=_bool(kw.get("bias", "true"))), [int(pos[0])]
    if name == "conv":
        out, k = int(pos[0]), int(pos[1])
        stride, pad = int(kw.get("stride", 1)), int(kw.get("pad", 0))
        module = torch.nn.Conv2d(shape[0], out, k, stride=stride, padding=pad,
                                 bias=_bool(kw.get("bias", "true")))
        return module, [out, (shape[1] + 2 * pad - k) // stride + 1,
                        (shape[2] + 2 * pad - k) // stride + 1]
    if name in ("maxpool", "avgpool"):
        k = int(pos[0])
        stride, pad = int(kw.get("stride", k)), int(kw.get("pad", 0))
        cls = torch.nn.MaxPool2d if name == "maxpool" else torch.nn.AvgPool2d
        return cls(k, stride=stride, padding=pad), [shape[0], (shape[1] + 2 * pad - k) // stride + 1,
                                                     (shape[2] + 2 * pad - k) // stride + 1]
    if name == "flatten":
        size = 1
        for d in shape:
            size *= d
        return torch.nn.Flatten(), [size]
    if name == "globalavgpool":
        return torch.nn.AdaptiveAvgPool2d(1), [shape[0], 1, 1]
    if name == "dropout":
        p = float(pos[0]) if pos else float(kw.get("p", 0.5))
        return torch.nn.Dropout(p), shape
    if name == "leakyrelu":
        slope = pos[0] if pos else kw.get("slope", kw.get("negative_slope", "0.01"))
        return torch.nn.LeakyReLU(float(slope)), shape
    if name in ACTIVATIONS:
        return ACTIVATIONS[name](), shape
    raise ValueError(f"unknown layer {name!r} in {token!r}")


def _sequential(spec, shape, named):
    layers = []
    for token in split_top(spec, None):
        module, shape = _layer(token, shape, named)
        layers.append(module)
    return torch.nn.Sequential(*layers), shape


def build(spec, input_shape):
    """The torch module of a quadra layer spec on one sample's shape ([F] or [C, H, W])."""
    named = []
    module, _ = _sequential(spec, [int(d) for d in input_shape], named)
    for path, layer in named:
        _attach(module, path, layer)
    return module
