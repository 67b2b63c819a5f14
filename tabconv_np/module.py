"""The module system: parameters, children, configs, state dicts.

A network is a tree of :class:`Module` objects, like ``torch.nn.Module`` but
inference-only.  Each module

* holds its parameters as float32 NumPy arrays in ``self.params`` (an ordered
  dict whose names follow PyTorch's ``state_dict``: ``weight``, ``bias``,
  ``running_mean``, ...), and its sub-modules in ``self.children``;
* describes itself by ``config()``: a JSON-able dict ``{"type": ..., args...}``
  from which :func:`tabconv_np.registry.from_config` rebuilds it (shapes
  included, values not);
* computes ``forward(x, layout)`` on a batch in layout ``"NCHW"`` or ``"NHWC"``;
* reports ``out_shape(in_shape)``, shapes being per-image ``(C, H, W)`` or
  ``(F,)`` whatever the layout;
* a *leaf* layer reports ``cost(in_shape)``: its per-image operation counts as
  named quantities (see :mod:`tabconv_np.ops`); not reporting one is an error;
* a *container* (sequence, residual block, graph) reports ``structure()``
  instead (see :mod:`tabconv_np.structure`): every walker of the package
  (folding, op counting, conversion) reads containers through it.

The flat parameter names of a tree, ``state_dict()``, join the children's
names with dots: ``layer1.0.bn1.running_var``.
"""
from collections import OrderedDict

import numpy as np

from .errors import ConfigError, ShapeError
from .validate import as_pair, channel_axis  # noqa: F401  (re-exported for the layers)

#: Parameters that are statistics of the training data, not learned: saved with the
#: weights, never counted as parameters.
STATISTICS = ("running_mean", "running_var")


class Module:
    """Base class; see the module docstring."""

    def __init__(self):
        self.params = OrderedDict()
        self.children = OrderedDict()

    # -- construction -------------------------------------------------
    def config(self):
        """JSON-able description; subclasses add their constructor arguments."""
        return {"type": type(self).__name__}

    @classmethod
    def from_config(cls, cfg, build):
        """The module described by ``cfg``; ``build(child_config)`` builds a child (containers)."""
        args = {k: v for k, v in cfg.items() if k != "type"}
        try:
            return cls(**args)
        except TypeError as e:
            raise ConfigError(f"bad arguments for layer type {cfg['type']!r}: {e}") from None

    # -- parameters ---------------------------------------------------
    def state_dict(self, prefix=""):
        """Flat ``{dotted name: array}`` of this module and all its descendants."""
        out = OrderedDict()
        for k, v in self.params.items():
            out[prefix + k] = v
        for name, child in self.children.items():
            out.update(child.state_dict(prefix + name + "."))
        return out

    def load_state_dict(self, state, strict=True):
        """Copy arrays from ``state`` into the parameters (cast to each parameter's dtype).

        Raises
        ------
        ShapeError
            A key is missing or unexpected (``strict``), or an array's shape
            differs from the parameter's; the message names the key and both shapes.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        extra = [k for k in state if k not in own]
        if strict and (missing or extra):
            raise ShapeError(f"state dict does not fit the network: missing keys {missing[:8]}"
                             f"{'...' if len(missing) > 8 else ''}, unexpected keys {extra[:8]}"
                             f"{'...' if len(extra) > 8 else ''}")
        for k, p in own.items():
            if k not in state:
                continue
            v = np.asarray(state[k])
            if v.shape != p.shape:
                raise ShapeError(f"parameter {k!r}: expected shape {p.shape}, found {v.shape}")
            p[...] = v.astype(p.dtype, copy=False)
        return self

    def learnable(self):
        """This module's own parameters without batch norm's running statistics (``STATISTICS``)."""
        return {k: v for k, v in self.params.items() if k not in STATISTICS}

    def num_params(self):
        """Learnable parameters of this module and its descendants; BN running statistics not counted
        (the same count as ``count_ops(...).total["params"]``)."""
        return int(sum(v.size for _, m in self.modules() for v in m.learnable().values()))

    def modules(self, prefix=""):
        """Yield ``(dotted name, module)`` for this module and every descendant, depth first."""
        yield prefix.rstrip("."), self
        for name, child in self.children.items():
            yield from child.modules(prefix + name + ".")

    # -- computation --------------------------------------------------
    def forward(self, x, layout):
        raise NotImplementedError

    def __call__(self, x, layout="NCHW"):
        return self.forward(x, layout)

    def out_shape(self, in_shape):
        """Per-image output shape for a per-image input shape (no batch axis)."""
        return tuple(in_shape)

    def cost(self, in_shape):
        """Per-image operation counts ``{quantity: int}`` of a leaf layer (see :mod:`tabconv_np.ops`).

        Every leaf layer must say what it costs, even when that is nothing
        (return ``{}``): a layer that does not is refused by the op counter,
        never counted as zero.
        """
        raise NotImplementedError(f"{type(self).__name__} does not report its cost")

    def structure(self):
        """``None`` for a leaf; a container returns its :mod:`tabconv_np.structure` node."""
        return None

    # -- display -------------------------------------------------------
    def extra_repr(self):
        cfg = self.config()
        return ", ".join(f"{k}={v}" for k, v in cfg.items() if k not in ("type", "children"))

    def __repr__(self):
        if not self.children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in self.children.items():
            sub = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        lines.append(")")
        return "\n".join(lines)
