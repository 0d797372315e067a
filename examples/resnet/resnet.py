#!/usr/bin/python3
"""The CIFAR ResNets of He et al. (2016, section 4.2) in PyTorch, sized for a CPU: a 3x3 stem
convolution, three stages of `n` basic blocks with WIDTH, 2 WIDTH and 4 WIDTH channels (the
first block of stages 2 and 3 halves the resolution with stride 2 and a 1x1 projection
shortcut), global average pooling and a linear classifier; 6n + 2 layers (n = 1: ResNet-8,
n = 3: ResNet-20). Every convolution is followed by BatchNorm and has no bias.

`quadra_spec(n, width, classes)` gives the same network as a quadra layer spec (its parameter
names are quadra's positional ones; an ONNX export of `ResNet` keeps the names below, e.g.
`layer2.0.conv1.weight`).
"""
import torch.nn as nn


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, n=1, width=16, classes=10, in_channels=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        stages, cin = [], width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            blocks = [BasicBlock(cin if b == 0 else cout, cout, 2 if (stage > 0 and b == 0) else 1)
                      for b in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def quadra_spec(n=1, width=16, classes=10):
    conv = "conv({},{},stride={},pad={},bias=false)"
    tokens = [conv.format(width, 3, 1, 1), "batchnorm", "relu"]
    cin = width
    for stage, cout in enumerate((width, 2 * width, 4 * width)):
        for b in range(n):
            stride = 2 if (stage > 0 and b == 0) else 1
            branch = (f"{conv.format(cout, 3, stride, 1)} batchnorm relu "
                      f"{conv.format(cout, 3, 1, 1)} batchnorm")
            if stride != 1 or cin != cout:
                branch += f", shortcut={conv.format(cout, 1, stride, 0)} batchnorm"
            tokens += [f"residual({branch})", "relu"]
            cin = cout
    tokens += ["globalavgpool", "flatten", f"linear({classes})"]
    return " ".join(tokens)


if __name__ == "__main__":
    print(quadra_spec())
