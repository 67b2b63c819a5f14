"""PyTorch definitions of the networks whose weights ship with tabconv_np.

The state_dict key names and the layer hyper-parameters match the NumPy
networks built by ``tabconv_np.models.build`` exactly, so a trained
``state_dict`` loads there unchanged (minus ``num_batches_tracked``).

Architectures (``build_torch(arch, in_channels, num_classes)``):

* ``resnet18-paper`` / ``resnet34-paper``: the TabConv authors' variant: stem
  conv 3x3 stride 2 (no max-pool) and every stage, layer1 included, starting at
  stride 2.
* ``resnet18-cifar`` / ``resnet34-cifar``: stem 3x3 stride 1, stage strides 1,2,2,2.
* ``resnet20``: He et al. (2016) CIFAR ResNet-20: stem 3x3 stride 1 to 16
  channels, 3 stages of 3 BasicBlocks at 16/32/64 channels (strides 1, 2, 2),
  option-A shortcuts (``ShortcutA``: stride-2 subsample, zero channel padding,
  no parameters), global average pool, fc (0.27 M parameters).
* ``nin``: Network in Network, all convs with bias + ReLU, no BN.
* ``lenet``: LeNet-5 (28x28 input).

Only torch is needed (no torchvision).
"""
import torch
from torch import nn
import torch.nn.functional as F

ARCHS = ("resnet18-paper", "resnet34-paper", "resnet18-cifar", "resnet34-cifar", "nin", "lenet",
         "resnet20")


class ShortcutA(nn.Module):
    """He et al.'s option-A shortcut: ``x[:, :, ::stride, ::stride]`` with ``before``
    zero channels in front and ``after`` behind (no parameters)."""

    def __init__(self, stride, before, after):
        super().__init__()
        self.stride, self.before, self.after = stride, before, after

    def forward(self, x):
        s = self.stride
        return F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, self.before, self.after))


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride, shortcut="conv"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=1e-5)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        if (stride != 1 or in_planes != planes) and shortcut == "A":
            pad = planes - in_planes
            self.downsample = ShortcutA(stride, pad // 2, pad - pad // 2)
        elif stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, 0, bias=False),
                nn.BatchNorm2d(planes, eps=1e-5))
        else:
            self.downsample = None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = x if self.downsample is None else self.downsample(x)
        return F.relu(out + sc)


class ResNet(nn.Module):
    def __init__(self, blocks, variant="paper", in_channels=1, num_classes=10):
        super().__init__()
        if variant == "paper":
            stem_stride, strides = 2, (2, 2, 2, 2)
        elif variant == "cifar":
            stem_stride, strides = 1, (1, 2, 2, 2)
        else:
            raise ValueError(f"unknown ResNet variant {variant!r}")
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        in_planes = 64
        for s, (n, planes, stride) in enumerate(zip(blocks, (64, 128, 256, 512), strides), 1):
            layer = []
            for i in range(n):
                layer.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            setattr(self, f"layer{s}", nn.Sequential(*layer))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


class ResNet20(nn.Module):
    """He et al.'s CIFAR ResNet-6n+2 (n = 3: ResNet-20) with option-A shortcuts."""

    def __init__(self, in_channels=1, num_classes=10, n=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16, eps=1e-5)
        in_planes = 16
        for s, (planes, stride) in enumerate(zip((16, 32, 64), (1, 2, 2)), 1):
            layer = []
            for i in range(n):
                layer.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, shortcut="A"))
                in_planes = planes
            setattr(self, f"layer{s}", nn.Sequential(*layer))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


class NIN(nn.Module):
    def __init__(self, in_channels=1, num_classes=10, dropout=0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 192, 5, 1, 2)
        self.conv2 = nn.Conv2d(192, 160, 1)
        self.conv3 = nn.Conv2d(160, 96, 1)
        self.conv4 = nn.Conv2d(96, 192, 5, 1, 2)
        self.conv5 = nn.Conv2d(192, 192, 1)
        self.conv6 = nn.Conv2d(192, 192, 1)
        self.conv7 = nn.Conv2d(192, 192, 3, 1, 1)
        self.conv8 = nn.Conv2d(192, 192, 1)
        self.conv9 = nn.Conv2d(192, num_classes, 1)
        self.dropout = float(dropout)  # training only; no parameters, no keys

    def forward(self, x):
        r = F.relu
        x = r(self.conv3(r(self.conv2(r(self.conv1(x))))))
        x = F.max_pool2d(x, 3, 2, 1)
        if self.dropout:
            x = F.dropout(x, self.dropout, self.training)
        x = r(self.conv6(r(self.conv5(r(self.conv4(x))))))
        x = F.max_pool2d(x, 3, 2, 1)
        if self.dropout:
            x = F.dropout(x, self.dropout, self.training)
        x = r(self.conv9(r(self.conv8(r(self.conv7(x))))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class LeNet(nn.Module):
    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, 1, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def build_torch(arch, in_channels=1, num_classes=10, **kw):
    """The torch network named ``arch`` (one of ``ARCHS``)."""
    if arch == "resnet20":
        return ResNet20(in_channels, num_classes)
    if arch.startswith("resnet"):
        depth, _, variant = arch.partition("-")
        blocks = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}.get(depth)
        if blocks is None or variant not in ("paper", "cifar"):
            raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHS}")
        return ResNet(blocks, variant, in_channels, num_classes)
    if arch == "nin":
        return NIN(in_channels, num_classes, **kw)
    if arch == "lenet":
        return LeNet(in_channels, num_classes)
    raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHS}")


def torch_from_network(net):
    """The torch twin of a tabconv_np ``Network`` of a bundled architecture, in eval mode.

    Builds ``build_torch(net.meta["arch"], ...)`` and loads ``net.state_dict()``
    into it (BN step counters, which tabconv_np does not store, keep torch's).
    The model takes *normalised* input (``net.normalize(images)``).
    """
    model = build_torch(net.meta["arch"], in_channels=net.input_shape[0],
                        num_classes=net.out_shape[-1])
    sd = {k: torch.from_numpy(v.astype("float32")) for k, v in net.state_dict().items()}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            sd[k] = v
    model.load_state_dict(sd)
    return model.eval()
