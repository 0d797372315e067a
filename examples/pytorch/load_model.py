#!/usr/bin/python3
"""A quadra model file (model.npz, best.npz, a checkpoint's model) as a PyTorch module with its
input preprocessing, using NumPy and PyTorch only:

    module, preprocess = load_model("runs/train/model.npz")
    probabilities = module(preprocess(raw_images)).softmax(1)   # raw uint8 or float inputs

The file holds the state_dict (names and layouts as the module quadra_modules.build makes: a
torch.nn.Sequential, with a Residual module per residual block), the layer spec
(__spec__), the input shape (__input_shape__) and the preprocessing the model was trained with:
x = (raw / 255 for uint8, else raw - __shift__) * __scale__ (__normalize__ names the kind).
batchnorm becomes BatchNorm1d/2d with the file's running statistics (eval mode uses them, as
quadra does), layernorm LayerNorm over the whole sample, groupnorm(G) GroupNorm."""
import pathlib
import sys

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from quadra_modules import build  # noqa: E402  (the spec grammar, residual blocks included)


def load_model(path):
    f = np.load(path)
    weights = {k: torch.from_numpy(f[k]) for k in f.files if not k.startswith("__")}
    shape = [int(d) for d in f["__input_shape__"]]
    dtype = next(v.dtype for v in weights.values() if v.is_floating_point())
    module = build(bytes(f["__spec__"]).decode(), shape).to(dtype)
    module.load_state_dict(weights)
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
