"""Direct convolution driver: reordered loops, no lowering buffer.

The textbook loop nest is ``for n, o, p, q: for c, i, j: y += w * x``: the
innermost loops jump between channels and rows and cannot be vectorised.
Here the loops are reordered so that the weight is a scalar in a register
and the innermost loop is one long contiguous run over the output plane::

    for n, o:                                  # prange: one output plane per task
        acc = bias[o]                          # (Ho, Wq) "wide" plane, flat
        for c in group(o), i < kh, j < kw:
            acc.flat[:] += weight[o, c, i, j] * xs[n, c, phase(i, j)].flat[offset(i, j):][:len]
        y[n, o] = acc[:, :Wo]

Two input transformations make that inner loop contiguous for every stride
and dilation, with no bounds tests:

* zero padding is materialised (a padded copy of x, the size of the input);
* a stride ``(sh, sw)`` is removed by splitting the padded input into
  ``sh*sw`` phases ("space to depth")::

      xs[n, c, rh, rw, a, b] = xpad[n, c, a*sh + rh, b*sw + rw]

  so that ``xpad[n, c, p*sh + i*dh, q*sw + j*dw]`` is
  ``xs[n, c, (i*dh) % sh, (j*dw) % sw, p + (i*dh)//sh, q + (j*dw)//sw]``:
  a stride-1 correlation of one phase plane.

Within a phase plane of width ``Wq``, output ``(p, q)`` reads element
``(p + ai)*Wq + q + bj``, so the whole plane is one run of
``(Ho-1)*Wq + Wo`` elements; the ``Wq - Wo`` wrap-around columns of each row
are computed and thrown away.  The plane stays in L1/L2 while all
``Cg*kh*kw`` taps are added, and no lowering buffer is built, which makes this
the method of choice for depthwise and small-group convolutions, where GEMMs
would be tiny.  Each element's sum runs in the same order (bias, then taps in
``(c, i, j)`` order) whatever the thread count, so the parallel and serial
kernels agree bitwise.

The loop nest is :mod:`tabconv_np.kernels.direct_kernels`; this module
builds its phase-split input (:func:`phase_split`) and converts layouts.
Nothing here validates (see :mod:`tabconv_np.conv`).
"""
import numpy as np

from ..kernels.direct_kernels import direct_phases
from .layout import to_nchw, to_nhwc


def phase_split(x, stride, padding, dilation, kernel_hw, out_hw):
    """Padded, phase-split copy of an NCHW batch for ``direct_phases``.

    Parameters
    ----------
    x : float32 array (N, C, H, W)
    stride : (sh, sw)
    padding : (top, bottom, left, right)
    dilation : (dh, dw)
    kernel_hw, out_hw : (kh, kw), (Ho, Wo)

    Returns
    -------
    float32 C-contiguous array (N, C, sh, sw, Hq, Wq) with
    ``xs[n, c, rh, rw, a, b] = xpad[n, c, a*sh + rh, b*sw + rw]``, covering
    the padded rows/columns the kernel reads.
    """
    N, C, H, W = x.shape
    sh, sw = stride
    top, _, left, _ = padding
    (kh, kw), (Ho, Wo) = kernel_hw, out_hw
    # padded extent actually read, rounded up to whole phases
    Hq = -(-((Ho - 1) * sh + (kh - 1) * dilation[0] + 1) // sh)
    Wq = -(-((Wo - 1) * sw + (kw - 1) * dilation[1] + 1) // sw)
    if (sh, sw) == (1, 1) and padding == (0, 0, 0, 0) and (Hq, Wq) == (H, W):
        return x.reshape(N, C, 1, 1, H, W)
    Hp, Wp = Hq * sh, Wq * sw
    xp = np.zeros((N, C, Hp, Wp), np.float32)
    h1, w1 = max(0, min(H, Hp - top)), max(0, min(W, Wp - left))
    xp[:, :, top:top + h1, left:left + w1] = x[:, :, :h1, :w1]
    if (sh, sw) == (1, 1):
        return xp.reshape(N, C, 1, 1, Hp, Wp)
    return np.ascontiguousarray(
        xp.reshape(N, C, Hq, sh, Wq, sw).transpose(0, 1, 3, 5, 2, 4))


def _skip_unread(x, stride, padding, dilation, kernel_hw, out_hw):
    """The same convolution with each stride at most the kernel's extent ``(k-1)*d + 1``.

    A longer stride skips rows (columns) the kernel never reads, yet
    :func:`phase_split` would allocate all ``stride`` phases of them: here only
    the rows read are kept (padding materialised on that axis), so the copy
    is never larger than the padded input.

    Returns
    -------
    (x, stride, padding) as tuples, for :func:`phase_split`
    """
    stride, padding = list(stride), list(padding)
    for a in (0, 1):
        extent = (kernel_hw[a] - 1) * dilation[a] + 1
        if stride[a] <= extent:
            continue
        pads = [(0, 0)] * 4
        pads[2 + a] = (padding[2 * a], padding[2 * a + 1])
        read = (np.arange(out_hw[a])[:, None] * stride[a] + np.arange(extent)).reshape(-1)
        x = np.take(np.pad(x, pads), read, axis=2 + a)
        stride[a], padding[2 * a], padding[2 * a + 1] = extent, 0, 0
    return x, tuple(stride), tuple(padding)


def conv2d_direct(x, weight, bias, stride, padding, dilation, groups, layout, out_hw):
    """Direct convolution (no validation).

    Parameters
    ----------
    x : float32 array (N, C, H, W) or (N, H, W, C) per ``layout``
    weight : float32 array (C_out, C/groups, kh, kw)
    bias : float32 array (C_out,) or None
    stride, dilation : (int, int)
    padding : (top, bottom, left, right)
    groups : int
    layout : "NCHW" or "NHWC" (of x and of the result; NHWC is converted to
        NCHW and back: the kernel's contiguous runs are along W)
    out_hw : (Ho, Wo)

    Returns
    -------
    float32 array (N, C_out, Ho, Wo) or (N, Ho, Wo, C_out)
    """
    N = x.shape[0]
    C_out, Cg, kh, kw = weight.shape
    Ho, Wo = out_hw
    if layout == "NHWC":
        x = to_nchw(x)
    if bias is None:
        bias = np.zeros(C_out, np.float32)
    out = np.empty((N, C_out, Ho, Wo), np.float32)
    x, stride, padding = _skip_unread(x, stride, padding, dilation, (kh, kw), out_hw)
    xs = phase_split(x, stride, padding, dilation, (kh, kw), out_hw)
    work = N * C_out * Ho * Wo * Cg * kh * kw
    direct_phases.pick(work)(xs, weight, bias, dilation[0], dilation[1], groups, Ho, Wo, out)
    if layout == "NHWC":
        out = to_nhwc(out)
    return out
