"""Folding batch norm into the convolution before it.

For a conv ``y = W * x + b`` followed by BN with ``scale = γ / sqrt(σ² + ε)``:
``W' = W · scale`` (per output channel) and ``b' = β + (b − μ) · scale``.
The folded network computes the same function with no BN layer left.
"""
import numpy as np

from .layers import BatchNorm2d, Conv2d
from .network import Network
from .structure import Chain, Dag, Residual, structure_of


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


def _fuse_chain(items):
    """A chain's ``(name, module)`` items with every Conv2d followed by a BatchNorm2d fused."""
    out, i = [], 0
    while i < len(items):
        name, child = items[i]
        nxt = items[i + 1][1] if i + 1 < len(items) else None
        if isinstance(child, Conv2d) and isinstance(nxt, BatchNorm2d):
            out.append((name, fuse_conv_bn(child, nxt)))
            i += 2
            continue
        out.append((name, _fold(child)))
        i += 1
    return tuple(out)


def _fold(module):
    """``module`` with BN folded, read through its structure: chains and both branches of a
    residual block fuse Conv2d+BatchNorm2d pairs; graph nodes are folded inside."""
    node = structure_of(module)
    if node is None:
        return module
    if isinstance(node, Chain):
        new = Chain(_fuse_chain(node.items))
    elif isinstance(node, Residual):
        new = Residual(_fuse_chain(node.main), _fuse_chain(node.shortcut), node.act)
    else:
        new = Dag(tuple((n, ins, _fold(m) if m is not None else None) for n, ins, m in node.nodes),
                  node.output)
    return type(module).rebuild(new, module)


def fold_batchnorm(net):
    """An equivalent :class:`Network` with every BatchNorm2d merged into the conv before it.

    The input network is left unchanged.  A BN that does not follow a conv is kept.
    """
    net = net.copy()
    return Network(_fold(net.body), net.input_shape, net.preprocess, net.layout,
                   dict(net.meta, batchnorm_folded=True))
