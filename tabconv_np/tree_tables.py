"""Hash-tree table layers (MADDNESS-style): ``TreeConv2d`` and ``TreeLinear``.

Like the PQ table layers (:mod:`tabconv_np.tables`) they replace a layer's
matrix product by table lookups, but every part is built for speed:

1. encoding by a depth-4 tree per codebook (:mod:`tabconv_np.hashtree`):
   4 comparisons, no multiplies; a convolution reads the 4 values straight
   from its input tensor, so no im2col matrix is built;
2. ``K = 16`` leaves, so a codebook's table is 16 rows of ``M`` outputs;
3. 8-bit tables: ``y[n, m] = step[m] * sum_c table[c, code[n, c], m] + bias[m]``,
   summed in integers (uint16 blocks widened to int32, no overflow for any C:
   see :mod:`tabconv_np.kernels.tree_kernels`) and dequantised once per output.

Parameters (``params``, saved like any other):

=================  =============  ==============================================
``split_cols``     int32 (C, 4)   column of the lowered row each level compares
``thresholds``     float32 (C, 16) node thresholds, heap order (entry 15 unused)
``table``          uint8 (C, 16, M) quantised table
``step``           float32 (M,)   dequantisation step per output
``bias``           float32 (M,)   the layer's bias plus the tables' offsets
=================  =============  ==============================================

Costs per output position (``M`` outputs, ``C`` codebooks): ``4*C``
comparisons (``encode_cmps``), ``C*M`` 8-bit lookups, ``(C-1)*M`` integer adds,
``M`` dequantisation multiplies and ``M`` bias adds; offline, ``16*C*Ds*M``
multiply-adds to build the table.  Storage: the bytes of the arrays above.

A NaN or Inf in the input makes the outputs whose window contains it NaN,
as in the exact layer; it is never encoded as a valid code.
"""
import numpy as np

from .errors import ConfigError, ShapeError
from .geometry import attach_geometry
from .hashtree import DEPTH, N_LEAVES, HashTrees, quantize_tables
from .hashtree import encode as tree_encode
from .kernels import tree_kernels as _k
from .kernels._jit import pick
from .layers import LinearShape
from .module import Module
from .pq import subspace_length
from .tables import table_from_weights
from .validate import as_n_codebooks

#: Lookup-adds that count as one unit of work when choosing between the serial and the
#: parallel kernel (``kernels._jit.PARALLEL_MIN_WORK`` is in multiply-adds): an 8-bit add of a
#: vectorised table row costs about a sixteenth of a float multiply-add, and waking a second
#: thread for less work made batch-1 networks slower (bench/tree_network.py, 2 threads).
LOOKUPS_PER_WORK = 16


class _TreeMixin:
    """Parameters, checks, lookup and costs shared by both tree layers."""

    def _init_tree(self, D, M, n_codebooks):
        self.D, self.M = int(D), int(M)
        self.n_codebooks = as_n_codebooks(n_codebooks, D, f"{type(self).__name__}: n_codebooks")
        self.Ds = subspace_length(D, self.n_codebooks)
        C = self.n_codebooks
        self.params["split_cols"] = np.zeros((C, DEPTH), np.int32)
        self.params["thresholds"] = np.zeros((C, N_LEAVES), np.float32)
        self.params["table"] = np.zeros((C, N_LEAVES, M), np.uint8)
        self.params["step"] = np.ones(M, np.float32)
        self.params["bias"] = np.zeros(M, np.float32)
        self.float_table, self._bias0 = None, None

    def set_tables(self, trees, table, bias=None):
        """Store ``trees`` and the float ``table`` (C, 16, M), quantised to 8 bits; ``bias`` (M,).

        The float table is kept in :attr:`float_table` (not saved) for refinement.
        """
        if trees.split_cols.shape != self.params["split_cols"].shape or trees.D != self.D:
            raise ShapeError(f"{type(self).__name__}: trees of {trees.C} codebooks over D = {trees.D} "
                             f"do not fit ({self.n_codebooks} codebooks, D = {self.D})")
        T = np.asarray(table, np.float32)
        if T.shape != self.params["table"].shape:
            raise ShapeError(f"{type(self).__name__}: table of shape {T.shape}, expected "
                             f"{self.params['table'].shape}")
        T8, step, offset = quantize_tables(T)
        p = self.params
        p["split_cols"][...] = trees.split_cols
        p["thresholds"][...] = trees.thresholds
        p["table"][...] = T8
        p["step"][...] = step
        p["bias"][...] = offset + (0 if bias is None else np.asarray(bias, np.float32))
        self.float_table, self._bias0 = T, (None if bias is None else np.asarray(bias, np.float32))
        return self

    def requantize(self, table):
        """Replace the float table (e.g. after refinement) and quantise it again."""
        return self.set_tables(self.trees(), table, self._bias0)

    def trees(self):
        """The layer's trees as :class:`~tabconv_np.hashtree.HashTrees` (no prototypes)."""
        C = self.n_codebooks
        return HashTrees(self.params["split_cols"], self.params["thresholds"],
                         np.zeros((C, N_LEAVES, self.Ds), np.float32), self.D)

    def _checked(self):
        """The parameters, after checking what a damaged file could break."""
        p = self.params
        cols = p["split_cols"]
        if cols.size and (cols.min() < 0 or cols.max() >= self.D):
            raise ShapeError(f"{type(self).__name__}: split_cols must be in [0, {self.D}), found "
                             f"{int(cols.min())}..{int(cols.max())}")
        return p

    def lookup(self, codes):
        """``y[n, m] = step[m] * sum_c table[c, codes[n, c], m] + bias[m]`` as float32 ``(N, M)``."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.n_codebooks or codes.dtype.kind not in "iu":
            raise ShapeError(f"{type(self).__name__}.lookup: expected integer codes (N, {self.n_codebooks}), "
                             f"got {codes.dtype} {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= N_LEAVES):
            raise ShapeError(f"{type(self).__name__}.lookup: codes must be in [0, {N_LEAVES})")
        return self.lookup_trusted(np.ascontiguousarray(codes, np.uint8))

    def lookup_trusted(self, codes):
        """:meth:`lookup` of C-contiguous uint8 codes known to be valid (no checks)."""
        p = self.params
        out = np.empty((len(codes), self.M), np.float32)
        if len(codes):
            pick(_k.lookup, out.size * self.n_codebooks // LOOKUPS_PER_WORK)(
                codes, p["table"], p["step"], p["bias"], out)
        return out

    def tree_cost(self, n_rows):
        C, M = self.n_codebooks, self.M
        return dict(encode_cmps=n_rows * C * DEPTH, lookups=n_rows * M * C,
                    lookup_adds=n_rows * M * (C - 1), dequant_mults=n_rows * M, bias_adds=n_rows * M,
                    offline={"macs": C * N_LEAVES * self.Ds * M})


class TreeConv2d(_TreeMixin, Module):
    """Convolution by hash-tree encoding and 8-bit table lookups (interchangeable with ``Conv2d``).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, dilation :
        As in ``Conv2d`` (groups are not supported).
    n_codebooks : int
        ``C`` subspaces of the ``D = in_channels*kh*kw`` lowered row; ``C = in_channels``
        gives one codebook per input channel's window.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 n_codebooks=None):
        Module.__init__(self)
        g = attach_geometry(self, "TreeConv2d", in_channels, out_channels, kernel_size, stride,
                            padding, dilation)
        self._init_tree(g.D, g.C_out, g.C_in if n_codebooks is None else n_codebooks)

    @classmethod
    def from_config(cls, cfg, build):
        try:
            return cls(cfg["in_channels"], cfg["out_channels"], cfg["kernel_size"], cfg.get("stride", 1),
                       cfg.get("padding", 0), cfg.get("dilation", 1), cfg.get("n_codebooks"))
        except KeyError as e:
            raise ConfigError(f"TreeConv2d: config lacks {e}") from None

    @classmethod
    def from_conv(cls, conv, trees):
        """The tree version of ``conv`` (BN folded) with ``trees``; the table is built from the
        trees' prototypes and ``conv``'s weights."""
        if conv.groups != 1:
            raise ConfigError(f"TreeConv2d: grouped convolutions (groups={conv.groups}) are not supported")
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, trees.C)
        w = conv.params["weight"]
        T = table_from_weights(trees.prototypes, w.reshape(w.shape[0], -1).T)
        return layer.set_tables(trees, T, conv.params.get("bias"))

    def config(self):
        return {"type": "TreeConv2d", **self.geometry.config(), "n_codebooks": self.n_codebooks}

    def _offsets(self):
        """``(ci, di, dj)`` (C, 4) int32: channel and window offsets of each level's value."""
        cols = self._checked()["split_cols"]
        kh, kw = self.kernel_size
        dh, dw = self.dilation
        ci = (cols // (kh * kw)).astype(np.int32)
        di = ((cols // kw) % kh * dh).astype(np.int32)
        dj = (cols % kw * dw).astype(np.int32)
        return ci, di, dj

    def _input(self, x, layout):
        self.geometry.check_batch(x, layout, "TreeConv2d")
        x = np.ascontiguousarray(x, np.float32)
        bad = None
        if not np.isfinite(x).all():
            rows, _ = self.geometry.lower(x, layout)
            bad = ~np.isfinite(rows).all(1)
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        return x, bad

    def encoder_args(self, x, layout):
        """Arguments of ``tree_kernels.encode_padded`` for a finite, contiguous float32 batch.

        Returns ``(args, (N, Ho, Wo))``: the kernel is called as
        ``encode_padded(*args, out)`` with ``out`` (N*Ho*Wo, C) uint8.  The
        batch is zero-padded once (a copy of the input) so that the encoder
        reads every value at a fixed offset from its window, unchecked.
        """
        N = x.shape[0]
        nhwc = layout == "NHWC"
        H, W = (x.shape[1], x.shape[2]) if nhwc else (x.shape[2], x.shape[3])
        Ho, Wo = self.geometry.out_hw(H, W)
        (pt, pb, pl, pr), (sh, sw) = self.geometry.padding, self.stride
        Hp, Wp, C = H + pt + pb, W + pl + pr, self.in_channels
        if (Hp, Wp) != (H, W):               # np.zeros + a slice: np.pad costs ~20 us more a call
            xp = np.zeros((N, Hp, Wp, C) if nhwc else (N, C, Hp, Wp), np.float32)
            (xp[:, pt:pt + H, pl:pl + W] if nhwc else xp[:, :, pt:pt + H, pl:pl + W])[...] = x
            x = xp
        s_c, s_h, s_w = (1, Wp * C, C) if nhwc else (Hp * Wp, Wp, 1)
        ci, di, dj = self._offsets()
        off = ci * np.int64(s_c) + di * np.int64(s_h) + dj * np.int64(s_w)
        return (x.reshape(-1), off, self.params["thresholds"], C * Hp * Wp, sh * s_h, sw * s_w, Ho, Wo), (N, Ho, Wo)

    def _codes(self, x, layout):
        """Codes (N*Ho*Wo, C) uint8 of a finite, contiguous float32 batch, and (N, Ho, Wo)."""
        args, shape = self.encoder_args(x, layout)
        out = np.empty((int(np.prod(shape)), self.n_codebooks), np.uint8)
        if out.size:
            pick(_k.encode_padded, out.size * DEPTH)(*args, out)
        return out, shape

    def encode(self, x, layout="NCHW"):
        """Codes ``(N*Ho*Wo, C)`` uint8 of a batch, read from the tensor (rows in (n, ho, wo) order)."""
        x, bad = self._input(x, layout)
        if bad is not None:
            raise ShapeError("TreeConv2d.encode: the input contains NaN or Inf")
        return self._codes(x, layout)[0]

    def forward(self, x, layout):
        """Encode every output position from the tensor, then look the codes up.

        Two passes, not one: encoding a whole batch first and then adding table
        rows measured faster than walking and adding position by position
        (ResNet-18 "paper" at batch 32, 1 thread: 14.2 vs 17.9 ms for the
        network; the walks of many positions overlap, and the lookup loop
        stays short and vectorised).
        """
        x, bad = self._input(x, layout)
        codes, (N, Ho, Wo) = self._codes(x, layout)
        out = self.lookup_trusted(codes).reshape(N, Ho, Wo, self.M)
        if bad is not None:
            out[bad.reshape(N, Ho, Wo)] = np.nan
        return out if layout == "NHWC" else np.ascontiguousarray(out.transpose(0, 3, 1, 2))

    def out_shape(self, in_shape):
        return self.geometry.out_shape(in_shape, "TreeConv2d")

    def cost(self, in_shape):
        out = self.out_shape(in_shape)
        return self.tree_cost(out[1] * out[2])


class TreeLinear(_TreeMixin, LinearShape, Module):
    """Linear layer by hash-tree encoding and 8-bit table lookups (interchangeable with ``Linear``).

    Parameters
    ----------
    in_features, out_features : int
    n_codebooks : int
        ``C`` subspaces of the input.
    """

    def __init__(self, in_features, out_features, n_codebooks=None):
        Module.__init__(self)
        self.in_features, self.out_features = int(in_features), int(out_features)
        C = n_codebooks if n_codebooks is not None else max(1, -(-self.in_features // 4))
        self._init_tree(self.in_features, self.out_features, C)

    @classmethod
    def from_config(cls, cfg, build):
        try:
            return cls(cfg["in_features"], cfg["out_features"], cfg.get("n_codebooks"))
        except KeyError as e:
            raise ConfigError(f"TreeLinear: config lacks {e}") from None

    @classmethod
    def from_linear(cls, linear, trees):
        """The tree version of ``linear`` with ``trees``."""
        layer = cls(linear.in_features, linear.out_features, trees.C)
        T = table_from_weights(trees.prototypes, linear.params["weight"].T)
        return layer.set_tables(trees, T, linear.params.get("bias"))

    def config(self):
        return {"type": "TreeLinear", "in_features": self.in_features,
                "out_features": self.out_features, "n_codebooks": self.n_codebooks}

    def encode(self, x, layout="NCHW"):
        """Codes ``(N, C)`` uint8 of a batch ``(N, in_features)``."""
        return tree_encode(x, self.trees())

    def forward(self, x, layout):
        self.check_batch(x)
        x = np.ascontiguousarray(x, np.float32)
        bad = ~np.isfinite(x).all(1)
        if bad.any():
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        p = self._checked()
        codes = np.empty((len(x), self.n_codebooks), np.uint8)
        if codes.size:
            pick(_k.encode_rows, codes.size * DEPTH)(x, p["split_cols"], p["thresholds"], codes)
        out = self.lookup_trusted(codes)
        out[bad] = np.nan
        return out

    def cost(self, in_shape):
        self.out_shape(in_shape)
        return self.tree_cost(1)


def warmup():
    """Compile (or load from the on-disk cache) every tree-layer kernel, serial and parallel,
    for both layouts."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    layer = TreeConv2d(2, 3, 3, padding=1, n_codebooks=2)
    layer.params["split_cols"][...] = rng.integers(0, 18, (2, DEPTH))
    p = layer.params
    codes = np.zeros((50, 2), np.uint8)
    for entry in ("parallel", "serial"):
        getattr(_k.encode_padded, entry)(x.reshape(-1), np.zeros((2, DEPTH), np.int64), p["thresholds"],
                                         50, 5, 1, 5, 5, codes)
        getattr(_k.encode_rows, entry)(x.reshape(2, -1)[:, :18].copy(), p["split_cols"],
                                       p["thresholds"], codes[:2])
        getattr(_k.lookup, entry)(codes, p["table"], p["step"], p["bias"], np.empty((50, 3), np.float32))
        for res in (np.zeros((50, 3), np.float32), np.zeros((1, 1), np.float32)):   # plans: with a residual or not
            getattr(_k.encode_lookup, entry)(x.reshape(-1), np.zeros((2, DEPTH), np.int64), p["thresholds"],
                                             50, 5, 1, 5, 5, p["table"], p["step"], p["bias"], res,
                                             res.shape[0] > 1, np.float32(0), np.float32(np.inf), 8,
                                             np.empty((50, 3), np.float32))
    return True
