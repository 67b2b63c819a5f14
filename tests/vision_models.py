"""The vision architectures the import tests use, in plain torch (no torchvision): ResNet-50-style
bottlenecks, SqueezeNet Fire modules, MobileNetV2 inverted residuals, a MobileNetV3 block with
squeeze-excite, DenseNet concatenation, ShuffleNet channel shuffles, Inception branches with LRN
and asymmetric pads, MTCNN's ONet, a detector neck.  Small channel counts keep the tests fast."""
import torch

nn, F = torch.nn, torch.nn.functional


def conv_bn(cin, cout, k=3, s=1, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act()) if act is not None else nn.Sequential(*layers)


# --- ResNet-50 style ------------------------------------------------------------------------
class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        cout = 4 * width
        self.body = nn.Sequential(conv_bn(cin, width, 1), conv_bn(width, width, 3, stride),
                                  conv_bn(width, cout, 1, act=None))
        self.down = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None

    def forward(self, x):
        s = x if self.down is None else self.down(x)
        return F.relu(self.body(x) + s)


def resnet50ish():
    return nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.MaxPool2d(3, 2, 1), Bottleneck(8, 4, 1), Bottleneck(16, 4, 1),
                         Bottleneck(16, 8, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


# --- SqueezeNet -----------------------------------------------------------------------------
class Fire(nn.Module):
    def __init__(self, cin, sq, e1, e3):
        super().__init__()
        self.sq, self.e1, self.e3 = nn.Conv2d(cin, sq, 1), nn.Conv2d(sq, e1, 1), nn.Conv2d(sq, e3, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.sq(x))
        return torch.cat([F.relu(self.e1(x)), F.relu(self.e3(x))], 1)


def squeezenet():
    return nn.Sequential(nn.Conv2d(3, 16, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                         Fire(16, 4, 8, 8), Fire(16, 4, 8, 8), nn.MaxPool2d(3, 2, ceil_mode=True),
                         Fire(16, 8, 12, 12), nn.Dropout(0.5), nn.Conv2d(24, 10, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


# --- MobileNetV2 ----------------------------------------------------------------------------
class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        h = cin * t
        self.res = stride == 1 and cin == cout
        self.body = nn.Sequential(conv_bn(cin, h, 1, act=nn.ReLU6), conv_bn(h, h, 3, stride, h, nn.ReLU6),
                                  conv_bn(h, cout, 1, act=None))

    def forward(self, x):
        return x + self.body(x) if self.res else self.body(x)


def mobilenetv2():
    return nn.Sequential(conv_bn(3, 8, 3, 2, act=nn.ReLU6), InvertedResidual(8, 8, 1, 1),
                         InvertedResidual(8, 12, 2, 4), InvertedResidual(12, 12, 1, 4),
                         conv_bn(12, 32, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(0.2), nn.Linear(32, 10))


# --- MobileNetV3 ----------------------------------------------------------------------------
class SqueezeExcite(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class V3Block(nn.Module):
    def __init__(self, cin, h, cout, k, stride):
        super().__init__()
        self.res = stride == 1 and cin == cout
        self.body = nn.Sequential(conv_bn(cin, h, 1, act=nn.Hardswish), conv_bn(h, h, k, stride, h, nn.Hardswish),
                                  SqueezeExcite(h), conv_bn(h, cout, 1, act=None))

    def forward(self, x):
        y = self.body(x)
        return x + y if self.res else y


def mobilenetv3():
    return nn.Sequential(conv_bn(3, 8, 3, 2, act=nn.Hardswish), V3Block(8, 16, 8, 3, 1), V3Block(8, 24, 12, 5, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 16), nn.Hardswish(),
                         nn.Linear(16, 10))


# --- DenseNet -------------------------------------------------------------------------------
class DenseLayer(nn.Module):
    def __init__(self, cin, growth):
        super().__init__()
        self.f = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 2 * growth, 1, bias=False),
                               nn.BatchNorm2d(2 * growth), nn.ReLU(), nn.Conv2d(2 * growth, growth, 3, 1, 1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.f(x)], 1)


def densenet():
    return nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         DenseLayer(8, 4), DenseLayer(12, 4), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 8, 1, bias=False), nn.AvgPool2d(2, 2), DenseLayer(8, 4),
                         nn.BatchNorm2d(12), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10))


# --- ShuffleNet -----------------------------------------------------------------------------
def shuffle(x, g):
    n, c, h, w = x.shape
    return x.view(n, g, c // g, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: split channels, one half through a branch, concat, shuffle."""

    def __init__(self, c):
        super().__init__()
        h = c // 2
        self.branch = nn.Sequential(conv_bn(h, h, 1), conv_bn(h, h, 3, 1, h, None), conv_bn(h, h, 1))

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return shuffle(torch.cat([a, self.branch(b)], 1), 2)


class GroupShuffle(nn.Module):
    """ShuffleNetV1 unit: grouped 1x1 conv, shuffle, depthwise 3x3, grouped 1x1, residual."""

    def __init__(self, c, g):
        super().__init__()
        self.g = g
        self.a, self.dw = conv_bn(c, c, 1, groups=g), conv_bn(c, c, 3, 1, c, None)
        self.b = conv_bn(c, c, 1, groups=g, act=None)

    def forward(self, x):
        return F.relu(x + self.b(self.dw(shuffle(self.a(x), self.g))))


def shufflenet():
    return nn.Sequential(conv_bn(3, 12, 3, 2), nn.MaxPool2d(3, 2, 1), GroupShuffle(12, 3), ShuffleUnit(12),
                         ShuffleUnit(12), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10))


# --- GoogLeNet / Inception ------------------------------------------------------------------
class _LRNFunction(torch.autograd.Function):
    """torch's local_response_norm, exported as one ONNX ``LRN`` node (as Caffe-born GoogLeNet and
    AlexNet graphs have it; torch's own export spells it out with 5-d average pooling)."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        return F.local_response_norm(x, size, alpha, beta, k)

    @staticmethod
    def symbolic(g, x, size, alpha, beta, k):
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


class LRN(nn.Module):
    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.args = (size, alpha, beta, k)

    def forward(self, x):
        return _LRNFunction.apply(x, *self.args)


class Inception(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.b1 = nn.Conv2d(cin, 4, 1)
        self.b2 = nn.Sequential(nn.Conv2d(cin, 4, 1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1))
        # TF-style "same" 4x4 conv: the asymmetric pad is a Pad node before an unpadded conv
        self.b3 = nn.Sequential(nn.Conv2d(cin, 2, 1), nn.ReLU(), nn.ZeroPad2d((1, 2, 1, 2)), nn.Conv2d(2, 3, 4))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), nn.Conv2d(cin, 3, 1))

    def forward(self, x):
        return F.relu(torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1))


def inception():
    return nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                         LRN(5, 1e-3, 0.75, 2.0), nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(),
                         LRN(5), nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(3, 2),
                         Inception(12), Inception(16), nn.AvgPool2d(3, 1, 1, count_include_pad=False),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.4), nn.Linear(16, 10))


# --- MTCNN ----------------------------------------------------------------------------------
class ONet(nn.Module):
    """MTCNN's ONet shape: conv + PReLU, ceil-mode max pooling, a face-score and a box head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.PReLU(8), nn.MaxPool2d(3, 2, ceil_mode=True),
                                      nn.Conv2d(8, 12, 3), nn.PReLU(12), nn.MaxPool2d(3, 2, ceil_mode=True),
                                      nn.Conv2d(12, 12, 3), nn.PReLU(12), nn.MaxPool2d(2, 2, ceil_mode=True),
                                      nn.Conv2d(12, 16, 2), nn.PReLU(16))
        self.score, self.box = nn.Conv2d(16, 2, 1), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = self.features(x)
        return F.softmax(self.score(x), dim=1), self.box(x)


# --- a small detector neck ------------------------------------------------------------------
class Neck(nn.Module):
    """A feature pyramid: nearest and bilinear upsampling (both corner modes), a transposed-conv
    upsampling path, and a score head (sigmoid) and a box head: two outputs."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = conv_bn(3, 8, 3, 2), conv_bn(8, 12, 3, 2), conv_bn(12, 16, 3, 2)
        self.l1, self.l2, self.l3 = nn.Conv2d(8, 8, 1), nn.Conv2d(12, 8, 1), nn.Conv2d(16, 8, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.deconv = nn.ConvTranspose2d(8, 8, 4, 2, 1, bias=False)
        self.score, self.box = nn.Conv2d(8, 3, 3, padding=1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        f1 = self.c1(x)
        f2 = self.c2(f1)
        f3 = self.c3(f2)
        p2 = self.l2(f2) + self.up(self.l3(f3))
        p1 = self.l1(f1) + F.interpolate(p2, size=f1.shape[-2:], mode="bilinear", align_corners=False) \
            + self.deconv(p2) + F.interpolate(p2, scale_factor=2.0, mode="bilinear", align_corners=True)
        return torch.sigmoid(self.score(p1)), self.box(F.relu(p1))


FAMILIES = {
    "resnet50": (resnet50ish, 64),
    "squeezenet": (squeezenet, 96),
    "mobilenetv2": (mobilenetv2, 96),
    "mobilenetv3": (mobilenetv3, 96),
    "densenet": (densenet, 64),
    "shufflenet": (shufflenet, 64),
    "inception": (inception, 96),
    "mtcnn": (ONet, 48),
    "neck": (Neck, 128),
}


def randomize(model, seed):
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
        elif isinstance(m, nn.PReLU):
            m.weight.data.uniform_(0.0, 0.5)
    return model.eval()
