"""The bundled architectures: ResNet-18/34 ("cifar" and "paper" variants), ResNet-20, NIN, LeNet.

Parameter names match the PyTorch definitions in ``weights/models_torch.py``
(torchvision-style ResNet: ``conv1, bn1, layer1.0.conv1, ...,
layer2.0.downsample.0/1, fc``), so a torch ``state_dict`` loads one to one.

* "cifar" ResNet: 3x3 stride-1 stem, stages at strides 1, 2, 2, 2.
* "paper" ResNet (the TabConv authors' code): 3x3 stride-2 stem, every stage
  starting at stride 2 (32x32 input: 16, 8, 4, 2, 1).
* ResNet-20 (He et al. 2016, the CIFAR ResNet): 3x3 stride-1 stem to 16 channels,
  three stages of 3 basic blocks at 16, 32, 64 channels (strides 1, 2, 2) whose
  widening shortcuts are option A (``SubsamplePad``: subsample by 2, zero channels;
  no parameters), global average pool, fc: 0.27 M parameters.
* NIN: conv5x5(192) 1x1(160) 1x1(96) maxpool3/2 conv5x5(192) 1x1(192) 1x1(192)
  maxpool3/2 conv3x3(192) 1x1(192) 1x1(classes) global-average-pool; every
  conv has a bias and a ReLU.
* LeNet: conv5x5(6, pad 2) relu maxpool2 conv5x5(16) relu maxpool2 flatten
  fc(120) relu fc(84) relu fc(classes).
"""
import numpy as np

from .errors import ConfigError
from .blocks import BasicBlock, Sequential
from .layers import BatchNorm2d, Conv2d, Flatten, GlobalAvgPool2d, Linear, MaxPool2d, ReLU
from .network import Network

ARCHS = ("resnet18-cifar", "resnet34-cifar", "resnet18-paper", "resnet34-paper", "nin", "lenet",
         "resnet20")
_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


def resnet(depth=18, variant="cifar", in_channels=3, num_classes=10):
    """ResNet-18/34 body (a ``Sequential``); see the module docstring for the variants."""
    blocks = _BLOCKS[f"resnet{depth}"]
    stem_stride, strides = {"cifar": (1, (1, 2, 2, 2)), "paper": (2, (2, 2, 2, 2))}[variant]
    layers = [("conv1", Conv2d(in_channels, 64, 3, stem_stride, 1, bias=False)),
              ("bn1", BatchNorm2d(64)), ("relu", ReLU())]
    planes_in = 64
    for s, (planes, n, stride) in enumerate(zip((64, 128, 256, 512), blocks, strides), 1):
        stage = []
        for i in range(n):
            stage.append((str(i), BasicBlock(planes_in, planes, stride if i == 0 else 1)))
            planes_in = planes
        layers.append((f"layer{s}", Sequential(stage)))
    layers += [("avgpool", GlobalAvgPool2d()), ("flatten", Flatten()), ("fc", Linear(512, num_classes))]
    return Sequential(layers)


def resnet20(in_channels=3, num_classes=10, n=3):
    """He et al.'s CIFAR ResNet-(6n+2) body (``n = 3``: ResNet-20), option-A shortcuts."""
    layers = [("conv1", Conv2d(in_channels, 16, 3, 1, 1, bias=False)), ("bn1", BatchNorm2d(16)),
              ("relu", ReLU())]
    planes_in = 16
    for s, (planes, stride) in enumerate(zip((16, 32, 64), (1, 2, 2)), 1):
        stage = []
        for i in range(n):
            stage.append((str(i), BasicBlock(planes_in, planes, stride if i == 0 else 1,
                                             shortcut="pad")))
            planes_in = planes
        layers.append((f"layer{s}", Sequential(stage)))
    layers += [("avgpool", GlobalAvgPool2d()), ("flatten", Flatten()), ("fc", Linear(64, num_classes))]
    return Sequential(layers)


def nin(in_channels=3, num_classes=10):
    """Network-in-Network body as in the TabConv authors' code."""
    spec = [(in_channels, 192, 5, 2), (192, 160, 1, 0), (160, 96, 1, 0), "pool",
            (96, 192, 5, 2), (192, 192, 1, 0), (192, 192, 1, 0), "pool",
            (192, 192, 3, 1), (192, 192, 1, 0), (192, num_classes, 1, 0)]
    layers, i = [], 0
    for s in spec:
        if s == "pool":
            layers.append((f"pool{i}", MaxPool2d(3, 2, 1)))
            continue
        i += 1
        layers += [(f"conv{i}", Conv2d(*s[:3], stride=1, padding=s[3])), (f"relu{i}", ReLU())]
    layers += [("avgpool", GlobalAvgPool2d()), ("flatten", Flatten())]
    return Sequential(layers)


def lenet(in_channels=1, num_classes=10, input_size=28):
    """LeNet-5-style body; ``input_size`` (square) fixes fc1's width."""
    feat = Sequential([("conv1", Conv2d(in_channels, 6, 5, padding=2)), ("relu1", ReLU()),
                       ("pool1", MaxPool2d(2)), ("conv2", Conv2d(6, 16, 5)), ("relu2", ReLU()),
                       ("pool2", MaxPool2d(2))])
    c, h, w = feat.out_shape((in_channels, input_size, input_size))
    return Sequential(list(feat.children.items()) + [
        ("flatten", Flatten()), ("fc1", Linear(c * h * w, 120)), ("relu3", ReLU()),
        ("fc2", Linear(120, 84)), ("relu4", ReLU()), ("fc3", Linear(84, num_classes))])


def build(arch, in_channels=3, num_classes=10, input_size=None):
    """A bundled network with zero-filled parameters.

    Parameters
    ----------
    arch : str
        One of ``ARCHS``: resnet18-cifar, resnet34-cifar, resnet18-paper,
        resnet34-paper, nin, lenet, resnet20.
    in_channels, num_classes : int
    input_size : int, optional
        Square input side; default 28 for one channel, else 32.

    Returns
    -------
    Network
    """
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    size = input_size or (28 if in_channels == 1 else 32)
    if arch == "resnet20":
        body = resnet20(in_channels, num_classes)
    elif arch.startswith("resnet"):
        depth, variant = arch[6:].split("-")
        body = resnet(int(depth), variant, in_channels, num_classes)
    elif arch == "nin":
        body = nin(in_channels, num_classes)
    else:
        body = lenet(in_channels, num_classes, size)
    return Network(body, (in_channels, size, size), meta={"arch": arch, "num_classes": num_classes})


def parse_input(text):
    """``"1x28x28"`` -> ``(1, 28, 28)``; also accepts ``"Nx1x28x28"``."""
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise ConfigError(f"input shape must look like 1x28x28 (C x H x W), got {text!r}")
    return shape


def randomize(net, seed=0):
    """Fill ``net``'s parameters with seeded He-scaled random values (BN variances in [0.5, 2]).

    For timing and testing architectures without trained weights (benches, tests); returns ``net``.
    """
    rng = np.random.default_rng(seed)
    state = {}
    for k, v in net.state_dict().items():
        if k.endswith("running_var"):
            state[k] = rng.uniform(0.5, 2.0, v.shape)
        elif k.endswith("weight") and v.ndim > 1:
            state[k] = rng.normal(0, np.sqrt(2.0 / np.prod(v.shape[1:])), v.shape)
        else:
            state[k] = rng.normal(0, 0.1, v.shape)
    return net.load_state_dict(state)

