"""Every layer type a config can name, in one explicit list, and :func:`from_config`.

A saved network (:mod:`tabconv_np.io`) stores each module's ``config()``;
loading rebuilds the tree from those configs through this table, so a layer
type that is not listed here cannot be loaded.  A new engine's layer types
are added to :data:`LAYER_TYPES`.
"""
from .blocks import BasicBlock, Graph, Sequential
from .errors import ConfigError
from .layers import (AvgPool2d, BatchNorm2d, Clip, Conv2d, Dropout, Flatten, GlobalAvgPool2d,
                     Linear, MaxPool2d, ReLU)
from .tables import TableConv2d, TableLinear
from .tree_tables import TreeConv2d, TreeLinear

#: The layer types :func:`from_config` builds, by config ``"type"``.
LAYER_TYPES = {cls.__name__: cls for cls in (
    Conv2d, BatchNorm2d, ReLU, Clip, Dropout, MaxPool2d, AvgPool2d, GlobalAvgPool2d, Flatten, Linear,
    Sequential, BasicBlock, Graph,
    TableConv2d, TableLinear,
    TreeConv2d, TreeLinear,
)}


def from_config(cfg):
    """Rebuild a module (parameters zero-filled) from ``Module.config()`` output.

    Raises
    ------
    ConfigError
        ``cfg`` is not a dict with a known ``"type"``, or its arguments do not fit.
    """
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise ConfigError(f"a module config must be a dict with a 'type', got {cfg!r:.200}")
    kind = cfg["type"]
    if not isinstance(kind, str) or kind not in LAYER_TYPES:
        raise ConfigError(f"unknown layer type {kind!r:.100} (known: {', '.join(sorted(LAYER_TYPES))})")
    return LAYER_TYPES[kind].from_config(cfg, from_config)
