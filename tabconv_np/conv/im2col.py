"""im2col convolution driver: lowering (:mod:`tabconv_np.kernels.im2col_kernels`)
+ BLAS GEMM.

The lowering turns every output position into one row of a matrix::

    rows[(n*Ho + oh)*Wo + ow, (c*kh + i)*kw + j]
        = x[n, c, oh*sh - pt + i*dh, ow*sw - pl + j*dw]      (0 outside x)

so ``rows`` has shape ``(N*Ho*Wo, C*kh*kw)`` and column order ``(C, kh, kw)``,
the same as ``weight.reshape(C_out, -1)``.  The convolution is then one matrix
product per group: ``rows[:, group columns] @ weight_g.reshape(C_out_g, -1).T``.
This exact row layout is also what the table-lookup (TabConv/PQ) layers
encode, so :func:`lower` builds it for
:func:`tabconv_np.functional.im2col_rows`.

The convolution itself (:func:`conv2d_im2col`) lowers to the same matrix with
its columns permuted to (group, kh, kw, C/group) order (``lower_gijc``),
from NHWC data: every kernel tap is then one contiguous copy of the channels,
several times faster to build, and the weight is permuted to match.

Like every driver in :mod:`tabconv_np.conv`, nothing here validates: the
caller (:mod:`tabconv_np.functional`) passes float32 arrays of the right
shapes and normalised settings.
"""
import numpy as np

from ..kernels.im2col_kernels import lower_gijc, lower_nchw, lower_nchw_gijc, lower_nhwc
from .chunks import images_per_chunk, run_chunks
from .layout import weight_ijc

#: NCHW convolutions with at most this many columns per group (e.g. 3x3
#: stems on 1-3 channels) multiply image by image straight into NCHW.
SMALL_K = 64
#: The (group, kh, kw, C) lowering (with a permuted copy of the weight) is
#: used when the batch has at least this many output positions per output
#: channel; below, the (C, kh, kw) lowering with the weight as it is.
GIJC_MIN_ROWS_PER_OUTPUT = 2


def lower(x, kh, kw, stride, padding, dilation, out_hw, layout, out):
    """Public-layout im2col rows of ``x`` into ``out`` (no validation).

    Parameters
    ----------
    x : float32 array (N, C, H, W) or (N, H, W, C)
    kh, kw : int
    stride, dilation : (int, int)
    padding : (top, bottom, left, right)
    out_hw : (Ho, Wo)
    layout : "NCHW" or "NHWC"
    out : float32 array (N*Ho*Wo, C*kh*kw), columns in (C, kh, kw) order
    """
    Ho, Wo = out_hw
    k = lower_nchw if layout == "NCHW" else lower_nhwc
    fn = k.pick(out.size)
    fn(x, kh, kw, stride[0], stride[1], padding[0], padding[2],
       dilation[0], dilation[1], Ho, Wo, out)
    return out


def conv2d_im2col(x, weight, bias, stride, padding, dilation, groups, layout, out_hw):
    """Convolution by im2col lowering and BLAS matrix products (no validation).

    Parameters
    ----------
    x : float32 C-contiguous array (N, C, H, W) or (N, H, W, C) per ``layout``
    weight : float32 C-contiguous array (C_out, C/groups, kh, kw)
    bias : float32 array (C_out,) or None
    stride, dilation : (int, int)
    padding : (top, bottom, left, right)
    groups : int
    layout : "NCHW" or "NHWC" (of x and of the result)
    out_hw : (Ho, Wo)

    Returns
    -------
    float32 array (N, C_out, Ho, Wo) or (N, Ho, Wo, C_out)

    Notes
    -----
    The lowering here uses column order (group, kh, kw, C/group)
    (``lower_gijc``, ``lower_nchw_gijc``) with the weight permuted
    to match: the same matrix as the public (C, kh, kw) rows up to a
    permutation of columns, but several times faster to build.  When the
    batch has fewer output positions than ``GIJC_MIN_ROWS_PER_OUTPUT *
    C_out`` (late layers at batch 1) the permuted weight copy would cost more
    than it saves, and the (C, kh, kw) lowering is used with the weight as
    it is.  The batch goes a few images at a time (``CHUNK_BYTES``); each
    chunk is one parallel lowering call and one stacked ``np.matmul`` over
    the groups (group ``g`` owns columns ``[g*Kg, (g+1)*Kg)``, ``Kg =
    C/G*kh*kw``)::

        for g in range(G):
            y[:, g*Cog:(g+1)*Cog] = rows[:, g*Kg:(g+1)*Kg] @ wmat[g].T

    The product is computed as (rows, C_out), i.e. NHWC; for NCHW each
    chunk's result is transposed into ``out`` while still in cache.
    Unpadded 1x1 convolutions skip the lowering: x (or its subsampled copy
    for stride > 1) is its own rows; in NCHW ``out[n] = wmat @ x[n]``.
    """
    N = x.shape[0]
    C_out, Cg, kh, kw = weight.shape
    C = Cg * groups
    Ho, Wo = out_hw
    P = Ho * Wo
    G = groups
    Cog = C_out // G
    Kg = Cg * kh * kw
    K = C * kh * kw
    if layout == "NCHW":
        out = np.empty((N, C_out, Ho, Wo), np.float32)
    else:
        out = np.empty((N, Ho, Wo, C_out), np.float32)
    if N == 0:
        return out
    pointwise = kh == 1 and kw == 1 and tuple(padding) == (0, 0, 0, 0)
    if pointwise and tuple(stride) != (1, 1):
        # a strided 1x1 convolution is a 1x1 convolution of the subsampled input
        if layout == "NCHW":
            x = np.ascontiguousarray(x[:, :, :Ho * stride[0]:stride[0], :Wo * stride[1]:stride[1]])
        else:
            x = np.ascontiguousarray(x[:, :Ho * stride[0]:stride[0], :Wo * stride[1]:stride[1]])
    if pointwise and layout == "NCHW":
        # out[n, g] (Cog, P) = w[g] (Cog, Cg) @ x[n, g] (Cg, P)
        np.matmul(weight.reshape(G, Cog, Kg), x.reshape(N, G, Kg, P),
                  out=out.reshape(N, G, Cog, P))
    elif pointwise:
        # y[g] (N*P, Cog) = x[:, g] (N*P, Cg) @ w[g].T
        np.matmul(x.reshape(N * P, G, Kg).transpose(1, 0, 2),
                  weight.reshape(G, Cog, Kg).transpose(0, 2, 1),
                  out=out.reshape(N * P, G, Cog).transpose(1, 0, 2))
    else:
        nb = images_per_chunk(N, P * K * 4, P)
        # The fast (g, kh, kw, c) lowering needs the weight permuted to match,
        # a strided copy of C_out*K floats per call: worth it only when there
        # are more rows than weights to copy (measured: the permuted copy
        # costs ~0.6 ns/float, the fast lowering ~0.1 and the (C, kh, kw)
        # one ~0.5 ns per lowered float).  Late layers at small batch lower
        # in (C, kh, kw) order against the weight as it is.
        fast = N * P >= GIJC_MIN_ROWS_PER_OUTPUT * C_out
        nchw = layout == "NCHW"
        if fast:
            # wmat[g, o, (i*kw + j)*Cg + c] = weight[g*Cog + o, c, i, j]
            wmat = weight_ijc(weight).reshape(G, Cog, Kg)
            low_kernel = lower_nchw_gijc if nchw else lower_gijc
            extra = (G,)
        else:
            wmat = weight.reshape(G, Cog, Kg)
            low_kernel = lower_nchw if nchw else lower_nhwc
            extra = ()
        wT = wmat.transpose(0, 2, 1)                                   # (G, Kg, Cog)
        # GEMM orientation (measured, 2 threads, docs/bench_conv.md):
        # * "image": NCHW with a short contraction (Kg <= SMALL_K, e.g. a stem
        #   on 1-3 channels): per image out[n, g] = wmat[g] @ rows_n[:, g].T
        #   straight into out; the product is cheap and a transpose of the
        #   result would cost more than it;
        # * "left": few rows for the weight (rows <= 2*C_out, late layers):
        #   yT = wmat @ rows.T, (C_out, rows), then transposed into out;
        # * "right": rows @ wmat.T, (rows, C_out), i.e. NHWC (for NCHW
        #   transposed into out while still in cache).
        if nchw and Kg <= SMALL_K:
            mode = "image"
        elif nb * P <= 2 * C_out:
            mode = "left"
        else:
            mode = "right"

        def make_buffers():
            rows = np.empty((nb * P, K), np.float32)
            if mode == "left":
                return rows, np.empty((C_out, nb * P), np.float32)
            if mode == "right" and nchw:
                return rows, np.empty((nb * P, C_out), np.float32)
            return rows, None

        def work(i, bufs):
            n0 = i * nb
            n1 = min(N, n0 + nb)
            m = n1 - n0
            R = m * P
            rows = bufs[0][:R]
            lowk = low_kernel.pick(rows.size)
            lowk(x[n0:n1], *extra, kh, kw, stride[0], stride[1], padding[0], padding[2],
                 dilation[0], dilation[1], Ho, Wo, rows)
            if mode == "image":
                # for n, g: out[n, g*Cog:(g+1)*Cog] (Cog, P) = wmat[g] @ rows_n[:, g-cols].T
                np.matmul(wmat, rows.reshape(m, P, G, Kg).transpose(0, 2, 3, 1),
                          out=out[n0:n1].reshape(m, G, Cog, P))
            elif mode == "left":
                # for g: yT[g*Cog:(g+1)*Cog] (Cog, R) = wmat[g] @ rows[:, g-cols].T
                yT = bufs[1][:, :R]
                np.matmul(wmat, rows.reshape(R, G, Kg).transpose(1, 2, 0),
                          out=yT.reshape(G, Cog, R))
                if nchw:
                    np.copyto(out[n0:n1].reshape(m, C_out, P),
                              yT.reshape(C_out, m, P).transpose(1, 0, 2))
                else:
                    np.copyto(out.reshape(N * P, C_out)[n0 * P:n1 * P], yT.T)
            else:
                # for g: y[:, g*Cog:(g+1)*Cog] (R, Cog) = rows[:, g-cols] @ wmat[g].T
                y = bufs[1][:R] if nchw else out.reshape(N * P, C_out)[n0 * P:n1 * P]
                np.matmul(rows.reshape(R, G, Kg).transpose(1, 0, 2), wT,
                          out=y.reshape(R, G, Cog).transpose(1, 0, 2))
                if nchw:
                    np.copyto(out[n0:n1].reshape(m, C_out, P),
                              y.reshape(m, P, C_out).transpose(0, 2, 1))

        run_chunks(-(-N // nb), work, make_buffers)
    if bias is not None:
        if layout == "NCHW":
            out += bias.reshape(1, C_out, 1, 1)
        else:
            out += bias
    return out
