"""Binary and ternary layers: ``BinaryConv2d`` and ``BinaryLinear``, weights as bits.

A float layer (BN folded first) becomes, per output filter ``m`` (its weights
``W[m]``, ``D = C*kh*kw`` of them, in im2col's column order):

* **binary weights** (XNOR-Net's closed form): ``B[m] = sign(W[m])`` and
  ``alpha[m] = mean |W[m]|``, the minimiser of ``||W[m] - alpha * B||`` over
  ``B`` in {-1, 1}^D and ``alpha``;
* **ternary weights** (TWN's rule): ``Delta[m] = 0.7 * mean |W[m]|``,
  ``T[m] = sign(W[m]) * [|W[m]| > Delta[m]]`` and ``alpha[m]`` = the mean of
  ``|W[m]|`` over the weights kept.

``sign(v) = +1 if v > 0 else -1`` everywhere (a weight of exactly 0 is -1).
Weights are stored bit-packed (:mod:`tabconv_np.kernels.binary_kernels`: 64
per uint64 word, least significant bit first, 0 past ``D``): the sign plane
(bit set = +1), and for ternary a second plane, the mask of nonzero weights.

Inputs (``activations``):

* ``"float"``: weights only; ``y[m] = alpha[m] * (x . T[m]) + b[m]``.  Each
  product is an add or a subtract (a skip for a ternary zero), counted as
  ``adds``; this implementation computes them as a float32 BLAS product with
  the unpacked {-1, 0, 1} matrix (the same sums up to float32 order; a product
  per weight on the machine, no faster than the float layer), unpacked at the
  first call and kept in memory beside the bits;
* ``"binary"``: a fully binary layer.  The input is binarised by the same
  sign (``x > 0``: +1, else -1) after zero padding, so **a padded position is
  -1**, as an input 0 is; its scale is one per tensor, ``beta`` = mean |x| of
  the layer's calibration inputs (XNOR-Net's per-position ``K``, a window mean
  of |x| per output, would cost a float add per lowered input value and
  gains little after a ReLU: one scale folded into ``alpha`` keeps the layer
  integer).  ``y[m] = alpha[m] * beta * dot + b[m]`` where ``dot``, the +-1
  product, is computed exactly by XNOR (AND for ternary) and popcount over
  packed rows.  A NaN or Inf input makes the outputs whose window reads it NaN.

Parameters (``params``, saved like any other):

=================  ===================  =================================================
``weight_sign``    uint64 (M, words)    the sign bits of the weights
``weight_mask``    uint64 (M, words)    ternary only: bits of the nonzero weights
``weight_scale``   float32 (M,)         ``alpha``
``bias``           float32 (M,)         the (BN-folded) float bias
``input_scale``    float32 (1,)         ``beta`` (1 and unused for float activations)
=================  ===================  =================================================

Costs per image (``n`` = outputs, ``w = ceil(D / 64)`` words per row, ``P``
output positions): binary activations: ``binarize_ops`` = ``P*D`` (the lowered
values compared and packed), ``bit_ops`` = ``n*w`` XORs (ternary: ``2*n*w``,
XOR and AND), ``popcounts`` = ``n*w``, ``adds`` = ``n*w`` (summing the popcounts,
the last one into ``D - 2*p``); float activations: ``adds`` = ``n*D``; both:
``dequant_mults`` = ``n`` (the scale) and ``bias_adds`` = ``n``; no ``macs``.
In the ``full`` convention each of these is one operation, as a MAC is: 64
binary products cost 3 operations (ternary 4) where 64 MACs cost 64.
Storage: the bit planes and the scales.
"""
import numpy as np

from .errors import ConfigError, ShapeError
from .geometry import ConvGeometry, attach_geometry, from_rows
from .kernels import binary_kernels as _k
from .kernels._jit import pick
from .layers import LinearShape
from .module import Module
from .validate import as_choice, as_int

#: Weight kinds and input modes.
WEIGHTS = ("binary", "ternary")
ACTIVATIONS = ("float", "binary")
#: TWN's threshold: ``Delta = TERNARY_THRESHOLD * mean |W|`` per filter.
TERNARY_THRESHOLD = 0.7


def n_words(D):
    """uint64 words holding ``D`` bits."""
    return -(-int(D) // _k.WORD)


def pack_bits(bits):
    """Bool ``(R, D)`` to uint64 ``(R, ceil(D / 64))``: bit ``d % 64`` of word ``d // 64``."""
    bits = np.asarray(bits, bool)
    R, D = bits.shape
    padded = np.zeros((R, n_words(D) * _k.WORD), bool)
    padded[:, :D] = bits
    return np.packbits(padded, axis=1, bitorder="little").view("<u8").astype(np.uint64)


def unpack_bits(words, D):
    """Inverse of :func:`pack_bits`: bool ``(R, D)``."""
    b = np.ascontiguousarray(words, "<u8").view(np.uint8)
    return np.unpackbits(b, axis=1, bitorder="little")[:, :D].astype(bool)


def binarize_weights(W):
    """``(signs bool (M, D), None, alpha float32 (M,))``: ``W > 0`` and ``mean |W|`` per row of ``W`` (M, D)."""
    W = np.asarray(W, np.float32)
    return W > 0, None, np.abs(W).mean(axis=1, dtype=np.float64).astype(np.float32)


def ternarize_weights(W):
    """``(signs, mask, alpha)`` of ``W`` (M, D): kept where ``|W| > 0.7 * mean |W|`` per row, ``alpha``
    the mean ``|W|`` kept (1 for a row with none)."""
    W = np.asarray(W, np.float32)
    a = np.abs(W).astype(np.float64)
    mask = a > TERNARY_THRESHOLD * a.mean(axis=1, keepdims=True)
    kept = mask.sum(axis=1)
    alpha = np.where(kept > 0, (a * mask).sum(axis=1) / np.maximum(kept, 1), 1.0).astype(np.float32)
    return W > 0, mask, alpha


def pack_rows(rows):
    """The sign bits of float32 rows ``(R, D)`` (``> 0`` set), uint64 ``(R, words)``."""
    rows = np.ascontiguousarray(rows, np.float32)
    out = np.empty((len(rows), n_words(rows.shape[1])), np.uint64)
    if out.size:
        pick(_k.pack_signs, rows.size)(rows, out)
    return out


def nonzeros(weight_mask, M, D):
    """Nonzero weights per row, int32 ``(M,)``: ``D`` each for binary weights (``weight_mask`` None)."""
    if weight_mask is None:
        return np.full(M, D, np.int32)
    return unpack_bits(weight_mask, D).sum(axis=1).astype(np.int32)


def xnor_products(rows, weight_sign, weight_mask=None, nnz=None):
    """The exact +-1 products ``sign(rows) . T[m]``, int32 ``(R, M)``, by XNOR (AND) and popcount.

    rows : float32 (R, D); weight_sign, weight_mask : uint64 (M, words), the
    mask None for binary weights; nnz : int32 (M,), :func:`nonzeros` (computed when None).
    """
    D = rows.shape[1]
    A = pack_rows(rows)
    out = np.empty((len(rows), len(weight_sign)), np.int32)
    if not out.size:
        return out
    work = out.size * A.shape[1] * _k.WORD
    nnz = nonzeros(weight_mask, len(weight_sign), D) if nnz is None else nnz
    pick(_k.xnor_gemm, work)(A, weight_sign, weight_sign if weight_mask is None else weight_mask, nnz,
                             weight_mask is not None, out)
    return out


def xnor_conv(x, weight_sign, weight_mask, weight_shape, stride=1, padding=0, dilation=1, layout="NCHW"):
    """The integer core of a fully binary :class:`BinaryConv2d`: int32 ``(N, M, Ho, Wo)`` (or NHWC).

    ``x`` binarised after zero padding (padding is -1), packed weights of a
    ``weight_shape`` ``(M, C, kh, kw)`` filter bank; the exact integer
    convolution of the +-1 (ternary: {-1, 0, 1}) tensors.
    """
    M, C, kh, kw = weight_shape
    g = ConvGeometry(C, M, (kh, kw), stride, padding, dilation)
    rows, (N, Ho, Wo) = g.lower(np.asarray(x, np.float32), layout)
    return from_rows(xnor_products(rows, weight_sign, weight_mask), N, Ho, Wo, layout)


class _BinaryMixin:
    """Parameters, checks, the row product and costs shared by both binary layers."""

    def _init_binary(self, M, D, weights, activations):
        where = type(self).__name__
        self.weights = as_choice(weights, f"{where}: weights", WEIGHTS)
        self.activations = as_choice(activations, f"{where}: activations", ACTIVATIONS)
        self.D = D
        nw = n_words(D)
        self.params["weight_sign"] = np.zeros((M, nw), np.uint64)
        if self.weights == "ternary":
            self.params["weight_mask"] = np.zeros((M, nw), np.uint64)
        self.params["weight_scale"] = np.ones(M, np.float32)
        self.params["bias"] = np.zeros(M, np.float32)
        self.params["input_scale"] = np.ones(1, np.float32)

    def set_weights(self, weight, bias=None, input_scale=1.0):
        """Binarise (ternarise) the float ``weight`` ``(M, ...)`` per output filter and store it with
        ``bias`` and the input scale ``beta``."""
        W = np.asarray(weight, np.float32).reshape(len(weight), -1)
        if W.shape != (len(self.params["bias"]), self.D):
            raise ShapeError(f"{type(self).__name__}: weight of {W.shape[0]} x {W.shape[1]} values, expected "
                             f"{len(self.params['bias'])} x {self.D}")
        signs, mask, alpha = (ternarize_weights if self.weights == "ternary" else binarize_weights)(W)
        p = self.params
        p["weight_sign"][...] = pack_bits(signs)
        if mask is not None:
            p["weight_mask"][...] = pack_bits(mask)
        p["weight_scale"][...] = alpha
        p["bias"][...] = 0 if bias is None else bias
        p["input_scale"][...] = input_scale
        self._checked()
        return self

    def _checked(self):
        """The parameters, after checking what a damaged file could break."""
        p, where = self.params, type(self).__name__
        s = float(p["input_scale"][0])
        if not (np.isfinite(s) and s > 0) or not np.all(np.isfinite(p["weight_scale"])):
            raise ShapeError(f"{where}: scales must be finite (input_scale positive), got input_scale {s}")
        spare = self.D % _k.WORD
        for name in ("weight_sign", "weight_mask"):
            if name in p and spare and np.any(p[name][:, -1] >> np.uint64(spare)):
                raise ShapeError(f"{where}: {name} has bits set past the {self.D} weights of a row")
        return p

    def signed_weight(self):
        """The {-1, 1} (ternary {-1, 0, 1}) weights, float32 ``(M, D)``."""
        p = self.params
        w = np.where(unpack_bits(p["weight_sign"], self.D), np.float32(1), np.float32(-1))
        return w * unpack_bits(p["weight_mask"], self.D) if self.weights == "ternary" else w

    def _unpacked(self, what):
        """``"signed"`` (:meth:`signed_weight`) or ``"nnz"`` (:func:`nonzeros`), computed once and kept
        while the bit planes stay as they were (compared word by word on each call, 1/32 of the
        float matrix's bytes): unpacking every call cost more than the product at batch 1."""
        p = self.params
        planes = [p[k] for k in ("weight_sign", "weight_mask") if k in p]
        cache = self.__dict__.setdefault("_unpacked_cache", {})
        hit = cache.get(what)
        if hit is None or len(hit[0]) != len(planes) or not all(
                a.shape == b.shape and np.array_equal(a, b) for a, b in zip(hit[0], planes)):
            value = self.signed_weight() if what == "signed" else nonzeros(p.get("weight_mask"), len(planes[0]), self.D)
            hit = cache[what] = ([a.copy() for a in planes], value)
        return hit[1]

    def dense_weight(self):
        """The float weights the layer stands for: ``alpha[m] * T[m]``, float32 ``(M, D)``."""
        return self.signed_weight() * self.params["weight_scale"][:, None]

    def rows_forward(self, rows):
        """The layer on lowered rows ``(R, D)``: float32 ``(R, M)``."""
        p = self._checked()
        rows = np.ascontiguousarray(rows, np.float32)
        if self.activations == "float":
            y = rows @ self._unpacked("signed").T
            y *= p["weight_scale"]
            y += p["bias"]
            return y
        dots = xnor_products(rows, p["weight_sign"], p.get("weight_mask"), self._unpacked("nnz"))
        y = dots.astype(np.float32) * (p["weight_scale"] * p["input_scale"][0]) + p["bias"]
        bad = ~np.isfinite(rows).all(axis=1)
        if bad.any():
            y[bad] = np.nan
        return y

    def binary_cost(self, n_out, positions):
        nw = n_words(self.D)
        c = {"dequant_mults": n_out, "bias_adds": n_out}
        if self.activations == "float":
            return {"adds": n_out * self.D, **c}
        return {"binarize_ops": positions * self.D, "popcounts": n_out * nw,
                "bit_ops": n_out * nw * (2 if self.weights == "ternary" else 1), "adds": n_out * nw, **c}


class BinaryConv2d(_BinaryMixin, Module):
    """Convolution with binary or ternary weights (interchangeable with ``Conv2d``, groups 1).

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation :
        As in ``Conv2d``.
    weights : {"binary", "ternary"}
    activations : {"float", "binary"}
        Float inputs, or inputs binarised (a fully binary layer; see the module docstring).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 weights="binary", activations="float"):
        Module.__init__(self)
        g = attach_geometry(self, "BinaryConv2d", in_channels, out_channels, kernel_size, stride, padding, dilation)
        self._init_binary(g.C_out, g.D, weights, activations)

    @classmethod
    def from_config(cls, cfg, build):
        try:
            return cls(cfg["in_channels"], cfg["out_channels"], cfg["kernel_size"], cfg.get("stride", 1),
                       cfg.get("padding", 0), cfg.get("dilation", 1), cfg["weights"],
                       cfg.get("activations", "float"))
        except KeyError as e:
            raise ConfigError(f"BinaryConv2d: config lacks {e}") from None

    @classmethod
    def from_conv(cls, conv, weights="binary", activations="float", input_scale=1.0):
        """The binary (ternary) version of ``conv`` (BN folded, groups 1)."""
        if conv.groups != 1:
            raise ConfigError(f"BinaryConv2d: grouped convolutions (groups={conv.groups}) are not supported")
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, weights, activations)
        return layer.set_weights(conv.params["weight"], conv.params.get("bias"), input_scale)

    def config(self):
        return {"type": "BinaryConv2d", **self.geometry.config(), "weights": self.weights,
                "activations": self.activations}

    def forward(self, x, layout):
        self.geometry.check_batch(x, layout, "BinaryConv2d")
        rows, (N, Ho, Wo) = self.geometry.lower(np.asarray(x, np.float32), layout)
        return from_rows(self.rows_forward(rows), N, Ho, Wo, layout)

    def out_shape(self, in_shape):
        return self.geometry.out_shape(in_shape, "BinaryConv2d")

    def cost(self, in_shape):
        out = self.out_shape(in_shape)
        return self.binary_cost(int(np.prod(out)), out[1] * out[2])


class BinaryLinear(_BinaryMixin, LinearShape, Module):
    """Linear layer with binary or ternary weights (interchangeable with ``Linear``).

    Parameters
    ----------
    in_features, out_features : int
    weights : {"binary", "ternary"}
    activations : {"float", "binary"}
    """

    def __init__(self, in_features, out_features, weights="binary", activations="float"):
        Module.__init__(self)
        self.in_features = as_int(in_features, "BinaryLinear: in_features", 1)
        self.out_features = as_int(out_features, "BinaryLinear: out_features", 1)
        self._init_binary(self.out_features, self.in_features, weights, activations)

    @classmethod
    def from_config(cls, cfg, build):
        try:
            return cls(cfg["in_features"], cfg["out_features"], cfg["weights"], cfg.get("activations", "float"))
        except KeyError as e:
            raise ConfigError(f"BinaryLinear: config lacks {e}") from None

    @classmethod
    def from_linear(cls, linear, weights="binary", activations="float", input_scale=1.0):
        """The binary (ternary) version of ``linear``."""
        layer = cls(linear.in_features, linear.out_features, weights, activations)
        return layer.set_weights(linear.params["weight"], linear.params.get("bias"), input_scale)

    def config(self):
        return {"type": "BinaryLinear", "in_features": self.in_features, "out_features": self.out_features,
                "weights": self.weights, "activations": self.activations}

    def forward(self, x, layout):
        self.check_batch(x)
        return self.rows_forward(x)

    def cost(self, in_shape):
        self.out_shape(in_shape)
        return self.binary_cost(self.out_features, 1)
