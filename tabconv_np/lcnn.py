"""LCNN, lookup-based convolution (Bagherinezhad et al., arXiv 1611.06473): ``LCNNConv2d``.

Every filter vector ``W[o, :, i, j]`` (length ``C_in``) of a ``kh x kw``
convolution is a sparse combination of ``s`` atoms of one shared dictionary
``D`` (k, C_in)::

    W[o, :, i, j] = sum over t < s of coef[o, i, j, t] * D[idx[o, i, j, t]]

so the convolution splits into two stages:

1. the dictionary stage, one 1x1 convolution of the input with ``D``:
   ``P[n, h, w, a] = sum_c x[n, c, h, w] * D[a, c]``, ``k`` maps
   (``H*W*k*C_in`` multiply-adds per image; a BLAS product);
2. the lookup stage: each output value is ``s*kh*kw`` looked-up map values
   times their coefficients, ``y[n, o, ho, wo] = bias[o] + sum_{i, j, t}
   coef[o, i, j, t] * P[n, ho*sh + i*dh - pt, wo*sw + j*dw - pl, idx[o, i, j, t]]``
   (:mod:`tabconv_np.kernels.lcnn_kernels`, parallel over output rows).

Parameters (``params``, saved like any other):

==============  =======================  ======================================
``dictionary``  float32 (k, C_in)        the atoms
``indices``     int32 (C_out, kh, kw, s)  atom of each (output, kernel position, pair)
``coefs``       float32 (C_out, kh, kw, s)  its coefficient
``bias``        float32 (C_out,)
==============  =======================  ======================================

Costs per image (:meth:`LCNNConv2d.cost`): ``macs`` = the dictionary stage
``H*W*k*C_in`` plus the lookup stage ``Ho*Wo*C_out*s*kh*kw`` (both are
multiply-accumulates, so every convention of :mod:`tabconv_np.ops` counts
them; :meth:`LCNNConv2d.stage_macs` gives them apart) and ``bias_adds``.  The LCNN
paper's "speedup" counts multiplications only, which is the ``multiplies``
convention here; ``full`` adds the bias adds, ReLUs, pooling and residual sums.
Storage: the dictionary, indices, coefficients and bias.
"""
import numpy as np

from .errors import ConfigError, ShapeError
from .geometry import attach_geometry
from .kernels import lcnn_kernels as _k
from .kernels._jit import pick
from .module import Module
from .validate import as_int, check_parameters


class LCNNConv2d(Module):
    """Lookup-based convolution (interchangeable with a ``Conv2d`` of groups 1).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, dilation :
        As in ``Conv2d`` (groups are not supported).
    atoms : int
        ``k``, the dictionary size.
    sparsity : int
        ``s``, the (index, coefficient) pairs per output channel and kernel position.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 atoms=1, sparsity=1):
        super().__init__()
        g = attach_geometry(self, "LCNNConv2d", in_channels, out_channels, kernel_size, stride,
                            padding, dilation)
        self.atoms = as_int(atoms, "LCNNConv2d: atoms", 1)
        self.sparsity = as_int(sparsity, "LCNNConv2d: sparsity", 1)
        if self.sparsity > self.atoms:
            raise ConfigError(f"LCNNConv2d: sparsity s = {self.sparsity} exceeds the dictionary "
                              f"size k = {self.atoms}")
        kh, kw = g.kernel_size
        codes = (g.C_out, kh, kw, self.sparsity)
        check_parameters(self.atoms * g.C_in + 2 * int(np.prod(codes)), "LCNNConv2d")
        self.params["dictionary"] = np.zeros((self.atoms, g.C_in), np.float32)
        self.params["indices"] = np.zeros(codes, np.int32)
        self.params["coefs"] = np.zeros(codes, np.float32)
        self.params["bias"] = np.zeros(g.C_out, np.float32)

    @classmethod
    def from_config(cls, cfg, build):
        try:
            return cls(cfg["in_channels"], cfg["out_channels"], cfg["kernel_size"], cfg.get("stride", 1),
                       cfg.get("padding", 0), cfg.get("dilation", 1), cfg["atoms"], cfg["sparsity"])
        except KeyError as e:
            raise ConfigError(f"LCNNConv2d: config lacks {e}") from None

    def config(self):
        return {"type": "LCNNConv2d", **self.geometry.config(), "atoms": self.atoms,
                "sparsity": self.sparsity}

    def filters(self):
        """The dense weight ``(C_out, C_in, kh, kw)`` the layer computes, in float64:
        ``W[o, :, i, j] = sum_t coefs[o, i, j, t] * dictionary[indices[o, i, j, t]]``."""
        p = self._checked()
        W = np.einsum("oijt,oijtc->ocij", p["coefs"].astype(np.float64),
                      p["dictionary"].astype(np.float64)[p["indices"]])
        return W

    def map_filters(self):
        """The lookup stage as a dense convolution of the ``k`` dictionary maps, float32
        ``(C_out, k, kh, kw)``: ``F[o, a, i, j] = sum_t coefs[o, i, j, t] * [indices[o, i, j, t] == a]``
        (zero where no pair points at atom ``a``).  ``conv(maps, F) + bias`` is the layer's output;
        the prepared plan runs it that way (:class:`tabconv_np.plan.PreparedLCNN`)."""
        p = self._checked()
        idx = p["indices"]
        F = np.zeros(idx.shape[:3] + (self.atoms,), np.float32)
        o, i, j, _ = np.indices(idx.shape, sparse=True)
        np.add.at(F, (o, i, j, idx), p["coefs"])
        return np.ascontiguousarray(F.transpose(0, 3, 1, 2))

    def _checked(self):
        """The parameters, after checking the indices (a damaged file could hold any)."""
        p = self.params
        idx = p["indices"]
        if idx.size and (idx.min() < 0 or idx.max() >= self.atoms):
            raise ShapeError(f"LCNNConv2d: indices must be in [0, {self.atoms}), found "
                             f"{int(idx.min())}..{int(idx.max())}")
        return p

    def maps(self, x, layout):
        """The dictionary stage: maps ``(N, H, W, k)`` float32, ``P = x . D^T`` per pixel."""
        self.geometry.check_batch(x, layout, "LCNNConv2d")
        x = np.asarray(x, np.float32)
        nhwc = x if layout == "NHWC" else x.transpose(0, 2, 3, 1)
        N, H, W, C = nhwc.shape
        return (nhwc.reshape(-1, C) @ self.params["dictionary"].T).reshape(N, H, W, self.atoms)

    def padded_maps(self, x, layout):
        """:meth:`maps` with the layer's zero padding around ``H`` and ``W``."""
        P = self.maps(x, layout)
        pt, pb, pl, pr = self.geometry.padding
        if pt or pb or pl or pr:
            N, H, W, k = P.shape
            Pp = np.zeros((N, H + pt + pb, W + pl + pr, k), np.float32)
            Pp[:, pt:pt + H, pl:pl + W] = P
            P = Pp
        return P

    def forward(self, x, layout):
        """The dictionary stage (BLAS), then the lookup stage (Numba, parallel over output rows)."""
        p = self._checked()
        P = self.padded_maps(x, layout)
        Ho, Wo = self.geometry.out_hw(x.shape[2] if layout == "NCHW" else x.shape[1],
                                      x.shape[3] if layout == "NCHW" else x.shape[2])
        out = np.empty((len(P), Ho, Wo, self.out_channels), np.float32)
        if out.size:
            (sh, sw), (dh, dw) = self.stride, self.dilation
            pick(_k.lookup_accumulate, out.size * p["indices"][0].size)(
                P, p["indices"], p["coefs"], p["bias"], sh, sw, dh, dw, out)
        return out if layout == "NHWC" else np.ascontiguousarray(out.transpose(0, 3, 1, 2))

    def out_shape(self, in_shape):
        return self.geometry.out_shape(in_shape, "LCNNConv2d")

    def stage_macs(self, in_shape):
        """``(dictionary stage, lookup stage)`` multiply-adds for one image ``(C_in, H, W)``:
        ``H*W*k*C_in`` and ``Ho*Wo*C_out*s*kh*kw``."""
        C_out, Ho, Wo = self.out_shape(in_shape)
        kh, kw = self.kernel_size
        return (in_shape[1] * in_shape[2] * self.atoms * self.in_channels,
                Ho * Wo * C_out * self.sparsity * kh * kw)

    def cost(self, in_shape):
        dict_macs, lookup_macs = self.stage_macs(in_shape)
        C_out, Ho, Wo = self.out_shape(in_shape)
        return {"macs": dict_macs + lookup_macs, "bias_adds": C_out * Ho * Wo}

    @classmethod
    def from_parts(cls, conv, dictionary, indices, coefs, bias=None):
        """The LCNN layer with ``conv``'s geometry (a ``Conv2d``, groups 1) and the given arrays."""
        if conv.groups != 1:
            raise ConfigError(f"LCNNConv2d: grouped convolutions (groups={conv.groups}) are not supported")
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, len(dictionary), np.shape(indices)[-1])
        p = layer.params
        p["dictionary"][...] = dictionary
        p["indices"][...] = indices
        p["coefs"][...] = coefs
        if bias is not None:
            p["bias"][...] = bias
        return layer


def warmup():
    """Compile (or load from the on-disk cache) the lookup kernel, serial and parallel."""
    layer = LCNNConv2d(2, 3, 3, padding=1, atoms=2, sparsity=1)
    P = np.zeros((1, 5, 5, 2), np.float32)
    for fn in _k.lookup_accumulate:
        fn(P, layer.params["indices"], layer.params["coefs"], layer.params["bias"], 1, 1, 1, 1,
           np.empty((1, 3, 3, 3), np.float32))
    return True
