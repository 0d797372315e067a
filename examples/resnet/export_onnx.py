#!/usr/bin/python3
"""Exports examples/resnet/resnet.py's ResNet (seeded, PyTorch's initialisation) to ONNX for
`quadra ... --model resnet.onnx`, keeping the state_dict names and the BatchNorm nodes.

Usage: examples/resnet/export_onnx.py OUT.onnx [--blocks N] [--width W] [--classes C]
                                       [--input-shape 1x28x28] [--batch-norm running|batch]
                                       [--weights STATE.pt]
--batch-norm running exports the model in eval mode (BatchNorm uses its running statistics);
batch exports it in training mode (BatchNorm normalizes by the statistics of each batch).
"""
import argparse
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from resnet import ResNet  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--blocks", type=int, default=1)
parser.add_argument("--width", type=int, default=16)
parser.add_argument("--classes", type=int, default=10)
parser.add_argument("--input-shape", default="1x28x28")
parser.add_argument("--batch-norm", choices=["running", "batch"], default="running")
parser.add_argument("--weights", help="a state_dict saved with torch.save")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

torch.manual_seed(args.seed)
shape = [int(d) for d in args.input_shape.split("x")]
model = ResNet(args.blocks, args.width, args.classes, in_channels=shape[0])
if args.weights:
    model.load_state_dict(torch.load(args.weights))
training = args.batch_norm == "batch"
model.train(training)
mode = torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.PRESERVE
# do_constant_folding=False keeps BatchNorm as its own node and the state_dict names.
torch.onnx.export(model, torch.zeros([2] + shape), args.out, opset_version=17,
                  input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                  do_constant_folding=False, training=mode)
print(f"wrote {args.out}")
