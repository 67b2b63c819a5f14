"""Pruned convolution: ``SparseConv2d``, weights stored in CSR, only the nonzeros multiplied.

The weight ``W`` (C_out, C, kh, kw), lowered to ``(C_out, K)`` with ``K =
C*kh*kw`` in im2col's column order, is kept as compressed sparse rows: row
``o`` holds ``data[indptr[o]:indptr[o+1]]`` at columns
``indices[indptr[o]:indptr[o+1]]``.  Forward: the input's im2col rows
(:meth:`~tabconv_np.geometry.ConvGeometry.lower`), transposed, then the CSR
product (:mod:`tabconv_np.kernels.sparse_kernels`), parallel over output channels.

Costs per image: ``macs`` = nonzeros x output positions (only the stored
weights are multiplied), ``index_reads`` = the same count of column indices
read (their own quantity: a sparse product reads an index per multiply),
``bias_adds``.  Storage: values, indices, row pointers and bias.
"""
import numpy as np

from .errors import ConfigError, ShapeError
from .geometry import attach_geometry, from_rows
from .kernels import sparse_kernels as _k
from .kernels._jit import pick
from .module import Module
from .validate import as_int, check_parameters


def csr(W):
    """``(data, indices, indptr)`` of the nonzeros of ``W`` (M, K), row by row: float32, int32, int32."""
    W = np.asarray(W, np.float32)
    rows, cols = np.nonzero(W)                          # row-major: CSR order
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(W)))])
    return W[rows, cols], cols.astype(np.int32), indptr.astype(np.int32)


class SparseConv2d(Module):
    """A convolution (groups 1) with CSR weights; interchangeable with ``Conv2d``.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation :
        As in ``Conv2d``.
    nnz : int
        Stored weights.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, nnz=0):
        super().__init__()
        g = attach_geometry(self, "SparseConv2d", in_channels, out_channels, kernel_size, stride,
                            padding, dilation)
        self.nnz = as_int(nnz, "SparseConv2d: nnz", 0)
        if self.nnz > g.C_out * g.D:
            raise ConfigError(f"SparseConv2d: nnz = {self.nnz} exceeds the {g.C_out * g.D} weights")
        check_parameters(2 * self.nnz + 2 * g.C_out, "SparseConv2d")
        self.params["data"] = np.zeros(self.nnz, np.float32)
        self.params["indices"] = np.zeros(self.nnz, np.int32)
        self.params["indptr"] = np.zeros(g.C_out + 1, np.int32)
        self.params["bias"] = np.zeros(g.C_out, np.float32)

    @classmethod
    def from_config(cls, cfg, build):
        try:
            return cls(cfg["in_channels"], cfg["out_channels"], cfg["kernel_size"], cfg.get("stride", 1),
                       cfg.get("padding", 0), cfg.get("dilation", 1), cfg["nnz"])
        except KeyError as e:
            raise ConfigError(f"SparseConv2d: config lacks {e}") from None

    def config(self):
        return {"type": "SparseConv2d", **self.geometry.config(), "nnz": self.nnz}

    @classmethod
    def from_dense(cls, conv, weight=None):
        """The sparse layer of ``conv`` (a ``Conv2d``, groups 1) keeping the nonzeros of ``weight``
        (default: its own weight) and its bias."""
        if conv.groups != 1:
            raise ConfigError(f"SparseConv2d: grouped convolutions (groups={conv.groups}) are not supported")
        W = conv.params["weight"] if weight is None else weight
        data, indices, indptr = csr(np.reshape(W, (conv.out_channels, -1)))
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, len(data))
        p = layer.params
        p["data"][...], p["indices"][...], p["indptr"][...] = data, indices, indptr
        if conv.params.get("bias") is not None:
            p["bias"][...] = conv.params["bias"]
        return layer

    def _checked(self):
        """The parameters, after checking the CSR structure (a damaged file could hold anything)."""
        p = self.params
        ptr, idx = p["indptr"], p["indices"]
        if ptr[0] != 0 or ptr[-1] != self.nnz or np.any(np.diff(ptr) < 0):
            raise ShapeError(f"SparseConv2d: indptr must rise from 0 to nnz = {self.nnz}, got "
                             f"{int(ptr[0])}..{int(ptr[-1])} (monotone: {bool(np.all(np.diff(ptr) >= 0))})")
        if idx.size and (idx.min() < 0 or idx.max() >= self.geometry.D):
            raise ShapeError(f"SparseConv2d: indices must be in [0, {self.geometry.D}), found "
                             f"{int(idx.min())}..{int(idx.max())}")
        return p

    def dense(self):
        """The weight ``(C_out, C_in, kh, kw)`` float32 the layer computes."""
        p = self._checked()
        W = np.zeros((self.out_channels, self.geometry.D), np.float32)
        W[np.repeat(np.arange(self.out_channels), np.diff(p["indptr"])), p["indices"]] = p["data"]
        return W.reshape(self.out_channels, self.in_channels, *self.kernel_size)

    def forward(self, x, layout):
        p = self._checked()
        self.geometry.check_batch(x, layout, "SparseConv2d")
        rows, (N, Ho, Wo) = self.geometry.lower(np.asarray(x, np.float32), layout)
        out = np.empty((self.out_channels, len(rows)), np.float32)
        if out.size:
            pick(_k.csr_cols, len(rows) * max(self.nnz, 1))(np.ascontiguousarray(rows.T), p["data"],
                                                             p["indices"], p["indptr"], p["bias"], out)
        return from_rows(out.T, N, Ho, Wo, layout)

    def out_shape(self, in_shape):
        return self.geometry.out_shape(in_shape, "SparseConv2d")

    def cost(self, in_shape):
        C_out, Ho, Wo = self.out_shape(in_shape)
        return {"macs": self.nnz * Ho * Wo, "index_reads": self.nnz * Ho * Wo, "bias_adds": C_out * Ho * Wo}
