"""Every layer type a config can name, in one explicit list, and :func:`from_config`.

A saved network (:mod:`tabconv_np.io`) stores each module's ``config()``;
loading rebuilds the tree from those configs through this table, so a layer
type that is not listed here cannot be loaded.  A new engine's layer types
are added to :data:`LAYER_TYPES`.
"""
from .blocks import BasicBlock, Graph, Sequential
from . import validate
from .errors import ConfigError
from .layers import (AvgPool2d, BatchNorm2d, Clip, Conv2d, Dropout, Flatten, GlobalAvgPool2d,
                     Linear, MaxPool2d, ReLU)
from .tables import TableConv2d, TableLinear
from .tree_tables import TreeConv2d, TreeLinear
from .activations import HardSigmoid, HardSwish, LeakyReLU, PReLU, Sigmoid, Softmax, Tanh
from .joins import Binary, Concat, Scale
from .layers import LRN, GlobalMaxPool2d
from .reshapes import ChannelGather, Pad, Reshape, SubsamplePad, Transpose
from .upsampling import ConvTranspose2d, Resize
from .int8 import Int8Conv2d, Int8Linear
from .lcnn import LCNNConv2d
from .rsdtr import RSDTRConv2d
from .sparse import SparseConv2d
from .binary import BinaryConv2d, BinaryLinear

#: The layer types :func:`from_config` builds, by config ``"type"``.
LAYER_TYPES = {cls.__name__: cls for cls in (
    Conv2d, BatchNorm2d, ReLU, Clip, Dropout, MaxPool2d, AvgPool2d, GlobalAvgPool2d, Flatten, Linear,
    Sequential, BasicBlock, Graph,
    TableConv2d, TableLinear,
    TreeConv2d, TreeLinear,
    LeakyReLU, PReLU, Sigmoid, Tanh, HardSigmoid, HardSwish, Softmax, LRN, GlobalMaxPool2d,
    Concat, Binary, Scale, Reshape, Transpose, ChannelGather, Pad, Resize, ConvTranspose2d,
    Int8Conv2d, Int8Linear,
    LCNNConv2d, RSDTRConv2d, SparseConv2d,
    BinaryConv2d, BinaryLinear, SubsamplePad,
)}


#: How deeply containers may nest in a config; deeper is a ConfigError, never a RecursionError.
MAX_NESTING = 32


def from_config(cfg):
    """Rebuild a module (parameters zero-filled) from ``Module.config()`` output.

    Each layer checks its own sizes before allocating (at most
    :data:`tabconv_np.validate.MAX_PARAMETERS` elements), and the running total
    over the tree is checked after each layer, so an absurd config is refused
    having reserved at most about twice the limit.

    Raises
    ------
    ConfigError
        ``cfg`` is not a dict with a known ``"type"``, its arguments do not fit,
        containers nest more than :data:`MAX_NESTING` deep, the parameters
        exceed the limit, or two layers give a parameter the same dotted name.
    """
    counted, depth = {}, [0]

    def build(c):
        if depth[0] >= MAX_NESTING:
            raise ConfigError(f"containers nested more than {MAX_NESTING} deep (tabconv_np.registry."
                              f"MAX_NESTING)")
        depth[0] += 1
        try:
            module = _build(c, build)
        finally:
            depth[0] -= 1
        for _, m in module.modules():
            counted.setdefault(id(m), (m, sum(v.size for v in m.params.values())))
        validate.check_parameters(sum(n for _, n in counted.values()), f"up to layer {c['type']}")
        return module

    module = build(cfg)
    check_names(module)
    return module


def _build(cfg, build):
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise ConfigError(f"a module config must be a dict with a 'type', got {cfg!r:.200}")
    kind = cfg["type"]
    if not isinstance(kind, str) or kind not in LAYER_TYPES:
        raise ConfigError(f"unknown layer type {kind!r:.100} (known: {', '.join(sorted(LAYER_TYPES))})")
    try:
        return LAYER_TYPES[kind].from_config(cfg, build)
    except (KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"layer type {kind}: bad or missing config entry: {type(e).__name__}: "
                          f"{e}") from None


def check_names(module):
    """Refuse two layers giving a parameter the same dotted name (``a.b`` + ``weight`` and
    ``a`` > ``b`` + ``weight``): one would silently share the other's values."""
    owner = {}
    for name, m in module.modules():
        for p in m.params:
            key = f"{name}.{p}" if name else p
            if key in owner:
                raise ConfigError(f"parameter name {key!r} is given by two layers, {owner[key][0]!r} "
                                  f"({type(owner[key][1]).__name__}) and {name!r} ({type(m).__name__}); "
                                  f"rename one")
            owner[key] = (name, m)
