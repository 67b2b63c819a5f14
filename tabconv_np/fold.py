"""Folding batch norm into the convolution before it.

For a conv ``y = W * x + b`` followed by BN with ``scale = γ / sqrt(σ² + ε)``:
``W' = W · scale`` (per output channel) and ``b' = β + (b − μ) · scale``.
The folded network computes the same function with no BN layer left.
"""
import numpy as np

from .layers import BasicBlock, BatchNorm2d, Conv2d, Sequential
from .network import Network


def fuse_conv_bn(conv, bn):
    """A new Conv2d (with bias) equal to ``bn(conv(x))``; computed in float64, stored float32."""
    fused = Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                   conv.dilation, conv.groups, bias=True, method=conv.method)
    p = bn.params
    scale = p["weight"].astype(np.float64) / np.sqrt(p["running_var"].astype(np.float64) + bn.eps)
    b = conv.params["bias"].astype(np.float64) if "bias" in conv.params else 0.0
    fused.params["weight"][...] = conv.params["weight"] * scale[:, None, None, None]
    fused.params["bias"][...] = p["bias"] + (b - p["running_mean"]) * scale
    return fused


def _fold(module):
    if isinstance(module, BasicBlock) and module.batchnorm:
        c = module.children
        block = BasicBlock(module.in_planes, module.planes, module.stride, module.eps, batchnorm=False)
        block.children["conv1"] = fuse_conv_bn(c["conv1"], c["bn1"])
        block.children["conv2"] = fuse_conv_bn(c["conv2"], c["bn2"])
        if "downsample" in c:
            block.children["downsample"] = _fold(c["downsample"])
        return block
    if isinstance(module, Sequential):
        items, out = list(module.children.items()), []
        i = 0
        while i < len(items):
            name, child = items[i]
            nxt = items[i + 1][1] if i + 1 < len(items) else None
            if isinstance(child, Conv2d) and isinstance(nxt, BatchNorm2d):
                out.append((name, fuse_conv_bn(child, nxt)))
                i += 2
                continue
            out.append((name, _fold(child)))
            i += 1
        return Sequential(out)
    return module


def fold_batchnorm(net):
    """An equivalent :class:`Network` with every BatchNorm2d merged into the conv before it.

    The input network is left unchanged.  A BN that does not follow a conv is kept.
    """
    net = net.copy()
    return Network(_fold(net.body), net.input_shape, net.preprocess, net.layout,
                   dict(net.meta, batchnorm_folded=True))
