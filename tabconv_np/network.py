"""``Network``: a module tree plus what it needs at its edges.

The edges are where a network meets data: the input layout (converted once,
here, never per layer), the input normalisation it was trained with
(``preprocess``: per-channel ``mean`` and ``std`` of images scaled to [0, 1]),
its input shape, and free-form metadata (architecture name, data set, ...).
"""
import numpy as np

from .errors import ConfigError, ShapeError
from .layers import Conv2d
from .ops import count_ops
from .registry import from_config
from .validate import channel_axis

FORMAT_VERSION = 1


class Network:
    """An inference network.

    Parameters
    ----------
    body : Module
        The layers (usually a ``Sequential``); ``state_dict`` names are the body's.
    input_shape : tuple of int
        ``(C, H, W)`` of one image.
    preprocess : dict, optional
        ``{"mean": [C floats], "std": [C floats]}`` applied by :meth:`predict`
        to images scaled to [0, 1]; identity when None.
    layout : {"NCHW", "NHWC"}
        Layout the layers compute in.
    meta : dict, optional
        JSON-able metadata (``arch``, ``dataset``, ...), saved with the weights.
    """

    def __init__(self, body, input_shape, preprocess=None, layout="NCHW", meta=None):
        self.body = body
        self.input_shape = tuple(int(v) for v in input_shape)
        self.preprocess = preprocess
        channel_axis(layout)
        self.layout = layout
        self.meta = dict(meta or {})
        self.out_shape = body.out_shape(self.input_shape)

    # -- computing -----------------------------------------------------
    def __call__(self, x, layout="NCHW"):
        """Logits of a preprocessed float batch ``x`` in ``layout`` (N, C, H, W) or (N, H, W, C)."""
        x = np.asarray(x)
        chw = (x.shape[1:] if layout == "NCHW" else x.shape[3:] + x.shape[1:3]) if x.ndim == 4 else None
        if x.ndim != 4 or tuple(chw) != self.input_shape:
            raise ShapeError(f"network expects a 4-d {layout} batch of images {self.input_shape} (C, H, W), "
                             f"got shape {x.shape}")
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        if layout != self.layout:
            perm = (0, 2, 3, 1) if self.layout == "NHWC" else (0, 3, 1, 2)
            x = x.transpose(perm)
        return self.body.forward(np.ascontiguousarray(x), self.layout)

    def normalize(self, images):
        """Float32 network input from images: uint8 scaled by 1/255 (floats taken as already in [0, 1]),
        then ``(x - mean) / std`` per channel. ``images``: (N, C, H, W)."""
        images = np.asarray(images)
        x = images.astype(np.float32) / np.float32(255) if images.dtype == np.uint8 else images.astype(np.float32)
        if self.preprocess:
            c = self.input_shape[0]
            mean = np.asarray(self.preprocess["mean"], np.float32).reshape(1, c, 1, 1)
            std = np.asarray(self.preprocess["std"], np.float32).reshape(1, c, 1, 1)
            x = (x - mean) / std
        return x

    def predict(self, images, batch=256):
        """Logits (N, classes) of images (N, C, H, W), uint8 or floats in [0, 1], in batches."""
        images = np.asarray(images)
        if images.ndim == 3 and self.input_shape[0] == 1:
            images = images[:, None]
        out = [self(self.normalize(images[i:i + batch])) for i in range(0, len(images), batch)]
        return np.concatenate(out) if out else np.zeros((0,) + tuple(self.out_shape), np.float32)

    # -- parameters and configuration -----------------------------------
    def state_dict(self):
        return self.body.state_dict()

    def load_state_dict(self, state, strict=True):
        self.body.load_state_dict(state, strict)
        return self

    def num_params(self):
        return self.body.num_params()

    def set_method(self, method):
        """Use conv ``method`` (naive | im2col | mec | direct | auto) in every Conv2d."""
        for _, m in self.body.modules():
            if isinstance(m, Conv2d):
                m.method = method
        return self

    def config(self):
        return {"format_version": FORMAT_VERSION, "input_shape": list(self.input_shape),
                "preprocess": self.preprocess, "layout": self.layout, "meta": self.meta,
                "body": self.body.config()}

    @classmethod
    def from_config(cls, cfg):
        """Network (parameters zero-filled) from :meth:`config` output."""
        try:
            return cls(from_config(cfg["body"]), cfg["input_shape"], cfg.get("preprocess"),
                       cfg.get("layout", "NCHW"), cfg.get("meta"))
        except KeyError as e:
            raise ConfigError(f"network config lacks the key {e}") from None

    def copy(self):
        """Deep copy (parameters copied)."""
        net = Network.from_config(self.config())
        net.load_state_dict({k: v.copy() for k, v in self.state_dict().items()})
        return net

    def __repr__(self):
        """One line per layer: name, layer, output shape."""
        rows = count_ops(self).rows
        name = self.meta.get("arch", "custom")
        lines = [f"Network({name}, input={self.input_shape}, layout={self.layout}, "
                 f"params={self.num_params():,})"]
        mods = dict(self.body.modules())
        w = max(len(r["name"]) for r in rows)
        for r in rows:
            m = mods.get(r["name"])
            desc = repr(m) if m is not None and not m.children else r["type"]
            lines.append(f"  {r['name']:<{w}}  {desc:<60} -> {tuple(r['out_shape'])}")
        return "\n".join(lines)
