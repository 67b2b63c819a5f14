"""MEC convolution driver: memory-efficient convolution (Cho & Brand, ICML 2017), NHWC.

Instead of one lowered row per output position (im2col, ``Ho*Wo`` rows of
``kh*kw*C`` per image), MEC lowers one row per output *column* ``w``: the
vertical strip of width ``kw`` under it, over the whole padded height::

    L[n*Wo + w, (h*kw + j)*C + c] = xpad[n, h, w*sw + j*dw, c]

``L`` has shape ``(N*Wo, Hu*kw*C)`` with ``Hu = (Ho-1)*sh + (kh-1)*dh + 1``
(the padded rows the kernel actually touches; MEC's ``i_h``).  Output row
``h`` is then a column window of ``L`` times the weight matrix
``K[(i*kw + j)*C + c, o] = weight[o, c, i, j]``::

    Y[h] = L[:, h*sh*kw*C : (h*sh + kh)*kw*C] @ K            (dilation dh == 1)
    Y[h] = sum_i L[:, (h*sh + i*dh)*kw*C : ... + kw*C] @ K[i*kw*C : (i+1)*kw*C]

``Y`` is ``(Ho, N*Wo, C_out)`` ("HNWC"), transposed to the caller's layout at
the end.  The workspace is ``N*Wo*Hu*kw*C`` floats against im2col's
``N*Ho*Wo*kh*kw*C``: about ``kh/sh`` times smaller.  The batch goes in
chunks of images (``chunks.CHUNK_BYTES`` of ``L``).  With groups, each group
has its own ``L`` (its channels are not contiguous in a shared ``L``'s
columns); one kernel call (:mod:`tabconv_np.kernels.mec_kernels`) lowers
them all.  Nothing here validates (see :mod:`tabconv_np.conv`).
"""
import numpy as np

from ..kernels.mec_kernels import lower_mec
from .chunks import images_per_chunk, run_chunks
from .layout import to_nhwc, weight_ijc


def conv2d_mec(x, weight, bias, stride, padding, dilation, groups, layout, out_hw):
    """Convolution by MEC lowering and BLAS products (no validation).

    Parameters
    ----------
    x : float32 array (N, C, H, W) or (N, H, W, C) per ``layout``
    weight : float32 array (C_out, C/groups, kh, kw)
    bias : float32 array (C_out,) or None
    stride, dilation : (int, int)
    padding : (top, bottom, left, right)
    groups : int
    layout : "NCHW" or "NHWC" (of x and of the result)
    out_hw : (Ho, Wo)

    Returns
    -------
    float32 array (N, C_out, Ho, Wo) or (N, Ho, Wo, C_out)
    """
    N = x.shape[0]
    C_out, Cg, kh, kw = weight.shape
    Ho, Wo = out_hw
    sh, sw = stride
    dh, dw = dilation
    pt, _, pl, _ = padding
    G = groups
    Cog = C_out // G
    Hu = (Ho - 1) * sh + (kh - 1) * dh + 1
    if N == 0:
        shape = (0, C_out, Ho, Wo) if layout == "NCHW" else (0, Ho, Wo, C_out)
        return np.empty(shape, np.float32)
    # NCHW input: an NHWC copy (one pass over x; reading the transposed view
    # in the kernel instead is several times slower)
    xv = to_nhwc(x) if layout == "NCHW" else x
    # K[g, (i*kw + j)*Cg + c, o] = weight[g*Cog + o, c, i, j], as a transposed
    # view of the (g, o, (i, j, c)) matrix (BLAS reads it with a trans flag)
    Kmat = weight_ijc(weight).reshape(G, Cog, kh * kw * Cg).transpose(0, 2, 1)
    Y = np.empty((Ho, N * Wo, C_out), np.float32)
    row = Hu * kw * Cg                                  # floats per L row, per group
    # images per chunk: keep L near CHUNK_BYTES
    nb = images_per_chunk(N, G * Wo * row * 4)
    itm = 4

    def make_buffers():
        return np.empty((G, nb * Wo, row), np.float32)

    def work(c, L):
        n0 = c * nb
        n1 = min(N, n0 + nb)
        R = (n1 - n0) * Wo
        Lc = L[:, :R]
        lowk = lower_mec.pick(Lc.size)
        lowk(xv[n0:n1], G, kw, sw, pt, pl, dw, Hu, Wo, Lc)
        for g in range(G):
            Lg = Lc[g]
            Yg = Y[:, n0 * Wo:n1 * Wo, g * Cog:(g + 1) * Cog]   # (Ho, R, Cog)
            if dh == 1:
                # windows[h] = Lg[:, h*sh*kw*Cg : (h*sh + kh)*kw*Cg], all h at once
                win = np.lib.stride_tricks.as_strided(
                    Lg, shape=(Ho, R, kh * kw * Cg),
                    strides=(sh * kw * Cg * itm, row * itm, itm), writeable=False)
                np.matmul(win, Kmat[g], out=Yg)
            else:
                for i in range(kh):
                    # kernel row i reads padded row h*sh + i*dh
                    win = np.lib.stride_tricks.as_strided(
                        Lg[:, i * dh * kw * Cg:], shape=(Ho, R, kw * Cg),
                        strides=(sh * kw * Cg * itm, row * itm, itm), writeable=False)
                    Ki = Kmat[g, i * kw * Cg:(i + 1) * kw * Cg]
                    if i == 0:
                        np.matmul(win, Ki, out=Yg)
                    else:
                        Yg += win @ Ki

    run_chunks(-(-N // nb), work, make_buffers)
    Y4 = Y.reshape(Ho, N, Wo, C_out)
    if layout == "NCHW":
        out = np.ascontiguousarray(Y4.transpose(1, 3, 0, 2))
        if bias is not None:
            out += bias.reshape(1, C_out, 1, 1)
    else:
        out = np.ascontiguousarray(Y4.transpose(1, 0, 2, 3))
        if bias is not None:
            out += bias
    return out
