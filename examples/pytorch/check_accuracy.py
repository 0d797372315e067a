#!/usr/bin/python3
"""check_accuracy.py MODEL.npz EVAL.csv [FASHION_MNIST_DIR]: loads a quadra model trained on
Fashion-MNIST with load_model.py, classifies the raw test images in PyTorch, and checks that the
accuracy equals the final test accuracy quadra logged in EVAL.csv (to one test image)."""
import csv
import gzip
import pathlib
import sys

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from load_model import load_model  # noqa: E402

model_file, eval_file = sys.argv[1], sys.argv[2]
data = pathlib.Path(sys.argv[3] if len(sys.argv) > 3 else "/usr/share/datasets/fashion-mnist")
def idx(name, offset):
    return np.frombuffer(gzip.open(data / name).read(), np.uint8, offset=offset).copy()


images, labels = idx("t10k-images-idx3-ubyte.gz", 16), idx("t10k-labels-idx1-ubyte.gz", 8)
images = images.reshape(len(labels), 28 * 28)

module, preprocess = load_model(model_file)
with torch.no_grad():
    predicted = module(preprocess(images)).argmax(1).numpy()
accuracy = float(np.mean(predicted == labels))
quadra = float(list(csv.DictReader(open(eval_file)))[-1]["test_accuracy"])
print(f"PyTorch test accuracy {accuracy:.4f}, quadra's {quadra:.4f}")
if abs(accuracy - quadra) > 1.5 / len(labels):
    sys.exit(f"check_accuracy: PyTorch's {accuracy} differs from quadra's {quadra}")
