"""``Network``: a module tree plus what it needs at its edges.

The edges are where a network meets data: the input layout (converted once,
here, never per layer), the input normalisation it was trained with
(``preprocess``), its input shape, and free-form metadata (architecture name,
data set, ...).

The input contract, one for :meth:`Network.predict` and :meth:`Network.__call__`:

- **uint8 images are always 0-255**: scaled to the network's input range
  (``preprocess["range"]``, default [0, 1]), then normalised
  (``(x - mean) / std`` per channel);
- **float images** given to ``predict`` must already be in that range: values
  more than half the range's width outside it (e.g. a maximum above 1.5 for
  a [0, 1] network: 0-255 pixels stored as floats) raise ShapeError saying to
  divide by 255 or pass uint8 -- never a silent wrong answer;
- **float batches** given to ``net(x)`` are the network's input tensor,
  already normalised (as a PyTorch module takes them).
"""
import math
import numbers

import numpy as np

from .errors import ConfigError, ShapeError
from .layers import Conv2d
from .ops import count_ops
from .registry import from_config
from .validate import as_int, channel_axis

FORMAT_VERSION = 1

#: The input range of a network whose ``preprocess`` does not say: images scaled to [0, 1].
DEFAULT_RANGE = (0.0, 1.0)

#: How far outside its input range (in range widths) a float image may reach before
#: ``predict`` refuses it: room for interpolation overshoot, none for 0-255 pixels.
RANGE_SLACK = 0.5


def input_range(preprocess):
    """``(lo, hi)`` of ``preprocess["range"]``, or :data:`DEFAULT_RANGE`; ConfigError unless ``lo < hi``."""
    r = (preprocess or {}).get("range", DEFAULT_RANGE)
    try:
        lo, hi = (float(v) for v in r)
        ok = math.isfinite(lo) and math.isfinite(hi) and lo < hi
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"preprocess: range must be two finite numbers lo < hi, got {r!r}")
    return lo, hi


def check_input_shape(shape):
    """``shape`` as a tuple of 3 positive ints (C, H, W); ConfigError otherwise (floats, Infinity,
    another length), never truncated."""
    if not isinstance(shape, (list, tuple)) or len(shape) != 3 or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) and v > 0 for v in shape):
        raise ConfigError(f"'input_shape' must be a list of 3 positive ints (C, H, W), got {shape!r:.80}")
    return tuple(int(v) for v in shape)


def check_preprocess(pre, channels):
    """Refuse a ``preprocess`` other than ``None`` or a dict of optional ``mean`` and ``std``
    (a finite number or 1 or ``channels`` of them, std > 0) and ``range`` (:func:`input_range`)."""
    if pre is None:
        return
    def numbers_of(v):
        v = list(v) if isinstance(v, (list, tuple)) else [v]
        return len(v) in (1, channels) and all(
            isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)) and math.isfinite(x)
            for x in v), v
    ok = isinstance(pre, dict) and set(pre) <= {"mean", "std", "range"}
    for key in ("mean", "std") if ok else ():
        if key in pre:
            fine, vals = numbers_of(pre[key])
            ok = ok and fine and (key == "mean" or min(vals) > 0)
    if not ok:
        raise ConfigError(f"'preprocess' must hold 'mean' and 'std' as 1 or {channels} finite "
                          f"numbers (std > 0) and 'range', got {pre!r:.120}")
    input_range(pre)


def normalize(images, preprocess, channels, layout="NCHW"):
    """Float32 network input from images: uint8 0-255 scaled to the input range (floats taken
    as in it), then ``(x - mean) / std`` per channel.

    Parameters
    ----------
    images : array (N, C, H, W), or (N, H, W, C) with ``layout="NHWC"``
    preprocess : dict or None
        A network's ``preprocess`` (see :class:`Network`).
    channels : int
        ``C``.
    layout : {"NCHW", "NHWC"}

    Returns
    -------
    float32 array, the shape of ``images``
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        lo, hi = input_range(preprocess)
        x = images.astype(np.float32) / np.float32(255 / (hi - lo))
        if lo:
            x += np.float32(lo)
    else:
        x = images.astype(np.float32)
    p = preprocess or {}
    if "mean" in p or "std" in p:
        shape = (1, channels, 1, 1) if layout == "NCHW" else (1, 1, 1, channels)
        mean = np.asarray(p.get("mean", 0.0), np.float32) * np.ones(channels, np.float32)
        std = np.asarray(p.get("std", 1.0), np.float32) * np.ones(channels, np.float32)
        x = (x - mean.reshape(shape)) / std.reshape(shape)
    return x


class Network:
    """An inference network.

    Parameters
    ----------
    body : Module
        The layers (usually a ``Sequential``); ``state_dict`` names are the body's.
    input_shape : tuple of int
        ``(C, H, W)`` of one image.
    preprocess : dict, optional
        ``{"mean": [C floats], "std": [C floats], "range": [lo, hi]}`` (every key
        optional): images in ``range`` (default [0, 1]; uint8 0-255 is scaled to
        it) are normalised by ``(x - mean) / std`` per channel.
    layout : {"NCHW", "NHWC"}
        Layout the layers compute in.
    meta : dict, optional
        JSON-able metadata (``arch``, ``dataset``, ...), saved with the weights.
    """

    def __init__(self, body, input_shape, preprocess=None, layout="NCHW", meta=None):
        self.body = body
        self.input_shape = check_input_shape(input_shape)
        check_preprocess(preprocess, self.input_shape[0])
        self.preprocess = preprocess
        channel_axis(layout)
        self.layout = layout
        self.meta = dict(meta or {})
        self.out_shape = body.out_shape(self.input_shape)
        #: A prepared plan the network runs through (``tabconv_np.prepare(net, attach=True)``),
        #: dropped by :meth:`load_state_dict` and :meth:`set_method`; None: the layers run as they are.
        self.plan = None

    # -- computing -----------------------------------------------------
    @property
    def input_range(self):
        """``(lo, hi)``: the range of the images the network was trained on, before ``mean``/``std``."""
        return input_range(self.preprocess)

    def _check_batch(self, x, layout, what):
        x = np.asarray(x)
        if x.ndim == 3 and self.input_shape[0] == 1:
            x = x[:, None] if layout == "NCHW" else x[..., None]
        chw = (x.shape[1:] if layout == "NCHW" else x.shape[3:] + x.shape[1:3]) if x.ndim == 4 else None
        if x.ndim != 4 or tuple(chw) != self.input_shape:
            raise ShapeError(f"{what}: network expects a 4-d {layout} batch of images {self.input_shape} "
                             f"(C, H, W), got shape {x.shape}")
        if x.dtype.kind not in "biuf":
            raise ShapeError(f"{what}: images must be uint8 or floats, got dtype {x.dtype}")
        return x

    def check_range(self, images, what="predict"):
        """Refuse float ``images`` outside the input range (see the module docstring).

        Raises
        ------
        ShapeError
            Finite values more than ``RANGE_SLACK`` range widths outside ``input_range``.
        """
        images = np.asarray(images)
        if images.dtype == np.uint8 or images.size == 0:
            return
        lo, hi = self.input_range
        mn, mx = float(images.min()), float(images.max())     # no copy of the images
        if not (math.isfinite(mn) and math.isfinite(mx)):      # NaN or Inf: the finite values
            finite = images[np.isfinite(images)]
            if finite.size == 0:
                return
            mn, mx = float(finite.min()), float(finite.max())
        slack = RANGE_SLACK * (hi - lo)
        if mn < lo - slack or mx > hi + slack:
            hint = ("images already normalised go to net(x), not predict" if mn < lo - slack
                    else "divide 0-255 pixels by 255 or pass them as uint8")
            raise ShapeError(f"{what}: float images with values in [{mn:.4g}, {mx:.4g}], but this network "
                             f"takes images in [{lo:g}, {hi:g}] (uint8 0-255 is scaled for you): {hint}")

    def normalize(self, images, layout="NCHW"):
        """Float32 network input from images (:func:`normalize` with this network's ``preprocess``)."""
        return normalize(images, self.preprocess, self.input_shape[0], layout)

    def __call__(self, x, layout="NCHW"):
        """Logits of a batch.

        Parameters
        ----------
        x : array (N, C, H, W), or (N, H, W, C) with ``layout="NHWC"``
            float: the network's input tensor, already normalised (as a PyTorch
            module takes it); uint8: images 0-255, scaled and normalised exactly
            as :meth:`predict` does.  ``N = 0`` gives an empty result.
        layout : {"NCHW", "NHWC"}

        Returns
        -------
        float32 array (N, *out_shape), or a tuple of them for a network with several outputs
        (a :class:`~tabconv_np.blocks.Graph` body with several), in the graph's order
        """
        x = self._check_batch(x, layout, "network")
        if x.dtype == np.uint8:
            x = self.normalize(x, layout)
        if len(x) == 0 and self.n_outputs > 1:
            return tuple(np.zeros((0,) + tuple(s), np.float32) for s in self.body.out_shapes(self.input_shape))
        if len(x) == 0:
            return np.zeros((0,) + tuple(self.out_shape), np.float32)
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        if self.plan is not None:
            return self.plan.run(x, layout)
        if layout != self.layout:
            perm = (0, 2, 3, 1) if self.layout == "NHWC" else (0, 3, 1, 2)
            x = x.transpose(perm)
        return self.body.forward(np.ascontiguousarray(x), self.layout)

    def unprepare(self):
        """Forget the prepared plan (``tabconv_np.prepare(net, attach=True)``): every call runs
        the layers as they are now."""
        self.plan = None
        return self

    def predict(self, images, batch=256, output=0):
        """Logits of images, in batches (of output ``output`` of a network with several).

        Parameters
        ----------
        images : array (N, C, H, W), or (N, H, W) for one-channel networks
            uint8 0-255, or floats in the network's input range (default [0, 1]);
            :meth:`normalize` applies the network's normalisation.  ``N = 0``
            gives an empty result.
        batch : int
            Images per forward pass, >= 1.
        output : int
            Which output of a network with several (``net(x)`` returns a tuple); default the first.

        Returns
        -------
        float32 array (N, *out_shape) (``out_shape``: the first output's)

        Raises
        ------
        ShapeError
            Wrong shape or dtype; float images outside the input range (0-255
            pixels as floats: divide by 255 or pass uint8).
        ConfigError
            ``batch`` is not a positive int.
        """
        as_int(batch, "predict: batch", 1)
        images = self._check_batch(images, "NCHW", "predict")
        self.check_range(images)
        as_int(output, "predict: output", 0, self.n_outputs - 1)
        out = [self(self.normalize(images[i:i + batch])) for i in range(0, len(images), batch)]
        if self.n_outputs > 1:
            out = [y[output] for y in out]
            if not out:
                shape = self.body.out_shapes(self.input_shape)[output]
                return np.zeros((0,) + tuple(shape), np.float32)
        return np.concatenate(out) if out else np.zeros((0,) + tuple(self.out_shape), np.float32)

    @property
    def n_outputs(self):
        """How many arrays ``net(x)`` returns (a tuple when more than one)."""
        return len(getattr(self.body, "outputs", ())) or 1

    # -- parameters and configuration -----------------------------------
    def state_dict(self):
        return self.body.state_dict()

    def load_state_dict(self, state, strict=True):
        self.body.load_state_dict(state, strict)
        self.plan = None
        return self

    def num_params(self):
        """Learnable parameters (BN running statistics not counted: ``count_ops`` gives the same)."""
        return self.body.num_params()

    def set_method(self, method):
        """Use conv ``method`` (naive | im2col | mec | direct | auto) in every Conv2d."""
        for _, m in self.body.modules():
            if isinstance(m, Conv2d):
                m.method = method
        self.plan = None
        return self

    def config(self):
        return {"format_version": FORMAT_VERSION, "input_shape": list(self.input_shape),
                "preprocess": self.preprocess, "layout": self.layout, "meta": self.meta,
                "body": self.body.config()}

    @classmethod
    def from_config(cls, cfg):
        """Network (parameters zero-filled) from :meth:`config` output."""
        try:
            return cls(from_config(cfg["body"]), cfg.get("input_shape"), cfg.get("preprocess"),
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
                 f"{self.num_params():,} parameters (BN running statistics not counted))"]
        mods = dict(self.body.modules())
        w = max(len(r["name"]) for r in rows)
        for r in rows:
            m = mods.get(r["name"])
            desc = repr(m) if m is not None and not m.children else r["type"]
            lines.append(f"  {r['name']:<{w}}  {desc:<60} -> {tuple(r['out_shape'])}")
        return "\n".join(lines)
