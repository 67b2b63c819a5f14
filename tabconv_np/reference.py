"""Plain NumPy reference convolution: the tests' oracle and the teaching version.

Nothing here is fast.  It is written to be read next to the definition of a
2-D convolution (really a cross-correlation, as in every deep-learning
framework)::

    y[n, o, p, q] = bias[o] + sum over c in group(o), i < kh, j < kw of
                    weight[o, c, i, j] * xpad[n, g*Cg + c, p*sh + i*dh, q*sw + j*dw]

where ``xpad`` is ``x`` with zero padding and ``g = o // (C_out/groups)``.
The sum is accumulated in float64; the result is returned as float32.
"""
import numpy as np


def _pair(v):
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def _padding4(padding):
    """int | (ph, pw) | (top, bottom, left, right) -> (top, bottom, left, right)."""
    if np.isscalar(padding):
        p = int(padding)
        return p, p, p, p
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    return padding


def conv2d_naive(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation) of an NCHW batch, by plain loops.

    Parameters
    ----------
    x : array (N, C, H, W)
    weight : array (C_out, C/groups, kh, kw)
    bias : array (C_out,) or None
    stride, dilation : int or (int, int)
    padding : int, (ph, pw) or (top, bottom, left, right)
    groups : int

    Returns
    -------
    float32 array (N, C_out, Ho, Wo) with
    ``Ho = (H + top + bottom - dh*(kh-1) - 1) // sh + 1`` (same for Wo).
    """
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    top, bottom, left, right = _padding4(padding)
    x = np.asarray(x, np.float64)
    weight = np.asarray(weight, np.float64)
    xpad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    N, C, Hp, Wp = xpad.shape
    C_out, Cg, kh, kw = weight.shape
    Cog = C_out // groups
    Ho = (Hp - dh * (kh - 1) - 1) // sh + 1
    Wo = (Wp - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((N, C_out, Ho, Wo))
    for g in range(groups):
        w_g = weight[g * Cog:(g + 1) * Cog]                # (Cog, Cg, kh, kw)
        x_g = xpad[:, g * Cg:(g + 1) * Cg]                 # (N, Cg, Hp, Wp)
        for p in range(Ho):
            for q in range(Wo):
                # the receptive field of output (p, q): (N, Cg, kh, kw)
                patch = x_g[:, :, p * sh: p * sh + dh * (kh - 1) + 1: dh,
                                  q * sw: q * sw + dw * (kw - 1) + 1: dw]
                # y[n, o] = sum_{c,i,j} patch[n, c, i, j] * w_g[o, c, i, j]
                y[:, g * Cog:(g + 1) * Cog, p, q] = np.tensordot(
                    patch, w_g, axes=([1, 2, 3], [1, 2, 3]))
    if bias is not None:
        y += np.asarray(bias, np.float64).reshape(1, C_out, 1, 1)
    return y.astype(np.float32)
