"""Winograd's minimal filtering: 3x3 convolutions with fewer multiplications.

F(m, 3) computes ``m`` outputs of a 1-D 3-tap correlation from ``m + 2``
inputs with ``m + 2`` multiplications instead of ``3m``.  For F(2, 3), with
``d = (d0, d1, d2, d3)`` and ``g = (g0, g1, g2)``::

    y0 = d0 g0 + d1 g1 + d2 g2 = m1 + m2 + m3
    y1 = d1 g0 + d2 g1 + d3 g2 = m2 - m3 - m4

    m1 = (d0 - d2) g0                 m2 = (d1 + d2) (g0 + g1 + g2) / 2
    m4 = (d1 - d3) g2                 m3 = (d2 - d1) (g0 - g1 + g2) / 2

four multiplications (the filter factors are computed once per layer).  In
matrix form ``y = A^T [(G g) * (B^T d)]`` with::

          | 1  0 -1  0 |         | 1    0    0  |
    B^T = | 0  1  1  0 |     G = | 1/2  1/2  1/2 |     A^T = | 1  1  1  0 |
          | 0 -1  1  0 |         | 1/2 -1/2  1/2 |           | 0  1 -1 -1 |
          | 0  1  0 -1 |         | 0    0    1  |

Nesting the 1-D algorithm gives F(m x m, 3 x 3) on ``(m+2) x (m+2)`` input
tiles: ``Y = A^T [ (G g G^T) * (B^T d B) ] A``.  Over ``C`` input channels the
elementwise products sum, so for each of the ``(m+2)^2`` tile positions
``(i, j)`` the stage is one matrix product over channels::

    M[i, j] (tiles, C_out) = V[i, j] (tiles, C) @ U[i, j] (C, C_out)

with ``U = G g G^T`` (per layer) and ``V = B^T d B`` (per input tile): the
``(m+2)^2`` products run as one batched BLAS call.  Multiplications per output
and input channel: ``(m+2)^2 / m^2`` against 9 for the direct product, i.e.
2.25x fewer for F(2x2, 3x3) and 4x fewer for F(4x4, 3x3), plus the transforms'
additions (and the filter transform, offline).

F(4x4, 3x3) uses Lavin and Gray's points 0, +-1, +-2 (its matrices are
:data:`TRANSFORMS` ``[4]``); its transforms have larger entries, so its float32
error is larger than F(2x2)'s (tests/test_winograd.py states and checks both
bounds).  Only 3x3, stride 1, dilation 1 convolutions, ungrouped or depthwise
(``groups == C``), have a Winograd form here; :func:`tabconv_np.functional.conv2d`
refuses others.  A depthwise layer has no sum over channels: its elementwise
stage is a plain product ``M[i, j] = V[i, j] * U[i, j]`` per channel (each
output channel ``o`` reads input channel ``o // (C_out / C)``).
Output tiles that overhang the output are computed on zero padding and cropped.
"""
import numpy as np

from ..kernels import winograd_kernels as _k

#: ``{m: (B^T, G, A^T)}`` for F(m x m, 3 x 3), float64.
TRANSFORMS = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
        np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]], np.float64)),
}


def filter_transform(weight, m):
    """``U[i, j] = (G g G^T)[i, j]`` for every filter: (m+2, m+2, C, C_out) float32.

    weight : (C_out, C, 3, 3); a depthwise weight (C_out, 1, 3, 3) gives (m+2, m+2, 1, C_out)
    """
    G = TRANSFORMS[m][1]
    a = m + 2
    C_out, C = weight.shape[:2]
    # vec(G g G^T) = (G kron G) vec(g): one (a*a, 9) x (9, C*C_out) product for every filter
    K = np.kron(G, G).astype(np.float32)                     # (a*a, 9)
    g = weight.transpose(1, 0, 2, 3).reshape(C * C_out, 9)   # filters in (C, C_out) order
    return (K @ g.T).reshape(a, a, C, C_out)


def conv2d_winograd(x, weight, bias, stride, padding, dilation, groups, layout, out_hw, m=2, U=None):
    """3x3 stride-1 convolution by Winograd F(m x m, 3 x 3) (no validation).

    Parameters
    ----------
    x : float32 C-contiguous array (N, C, H, W) or (N, H, W, C) per ``layout``
    weight : float32 array (C_out, C, 3, 3); not read when ``U`` is given
    bias : float32 array (C_out,) or None
    stride, dilation : (1, 1)
    padding : (top, bottom, left, right)
    groups : 1, or C (depthwise: ``weight`` is (C_out, 1, 3, 3), C_out a multiple of C)
    layout : "NCHW" or "NHWC"
    out_hw : (Ho, Wo)
    m : {2, 4}
        Output tile size.
    U : float32 array (m+2, m+2, C, C_out), optional
        :func:`filter_transform` of ``weight``, when the caller keeps it.

    Returns
    -------
    float32 array (N, C_out, Ho, Wo) or (N, Ho, Wo, C_out)
    """
    xh = x if layout == "NHWC" else x.transpose(0, 2, 3, 1)
    if U is None:
        U = filter_transform(weight, m)
    V = input_tiles(xh, m, padding, out_hw)
    M = tile_products(V, U, groups)
    b = np.zeros(U.shape[3], np.float32) if bias is None else bias
    out = output_tiles(M, m, len(xh), out_hw, b)
    return out if layout == "NHWC" else np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def input_tiles(xh, m, padding, out_hw):
    """``V = B^T d B`` of every input tile: (a*a, N*th*tw, C) float32, ``a = m + 2``.

    xh : float32 (N, H, W, C); padding : (top, bottom, left, right); out_hw : (Ho, Wo).
    Tiles ``th = ceil(Ho/m)`` by ``tw = ceil(Wo/m)`` per image, read from the input
    zero-padded to ``(th*m + 2) x (tw*m + 2)``.
    """
    BT = np.ascontiguousarray(TRANSFORMS[m][0], np.float32)
    N, H, W, C = xh.shape
    Ho, Wo = out_hw
    pt, _, pl, _ = padding
    th, tw = -(-Ho // m), -(-Wo // m)
    xp = np.zeros((N, th * m + 2, tw * m + 2, C), np.float32)
    h1, w1 = min(H, th * m + 2 - pt), min(W, tw * m + 2 - pl)
    xp[:, pt:pt + h1, pl:pl + w1] = xh[:, :h1, :w1]
    V = np.empty(((m + 2) ** 2, N * th * tw, C), np.float32)
    _k.input_transform.pick(V.size * (m + 2))(xp, BT, m, th, tw, V)
    return V


def tile_products(V, U, groups=1):
    """The elementwise stage ``M[i, j] = V[i, j] @ U[i, j]``: (a*a, tiles, C_out) float32.

    V : (a*a, tiles, C) from :func:`input_tiles`; U : (a, a, C, C_out) from
    :func:`filter_transform` (``(a, a, 1, C_out)`` when depthwise, ``groups > 1``:
    a product per channel, no sum).
    """
    a2, _, C = V.shape
    C_out = U.shape[3]
    if groups == 1:
        return np.matmul(V, U.reshape(a2, C, C_out))       # (a*a) batched BLAS products
    if C_out != C:
        V = np.repeat(V, C_out // C, axis=2)               # output o reads channel o // (C_out/C)
    return V * U.reshape(a2, 1, C_out)


def output_tiles(M, m, N, out_hw, bias):
    """``Y = A^T M A + bias`` of every output tile, cropped to ``out_hw``: (N, Ho, Wo, C_out) float32."""
    AT = np.ascontiguousarray(TRANSFORMS[m][2], np.float32)
    Ho, Wo = out_hw
    th, tw = -(-Ho // m), -(-Wo // m)
    out = np.empty((N, Ho, Wo, M.shape[2]), np.float32)
    _k.output_transform.pick(M.size * m)(M, AT, th, tw, Ho, Wo, bias, out)
    return out


def _transform_ops(T):
    """(multiplications, additions) of ``T @ v`` for one vector: entries other than 0 and +-1
    are multiplications; each row sums its nonzero terms."""
    nz = T != 0
    return int(np.sum(nz & (np.abs(T) != 1))), int(np.sum(np.maximum(nz.sum(1) - 1, 0)))


def winograd_cost(C, C_out, Ho, Wo, m, groups=1):
    """Operation counts of F(m x m, 3 x 3) on one image: ``{"mults", "adds", "offline"}``.

    * elementwise stage, with ``Cg = C / groups`` input channels per group (1
      when depthwise): ``tiles * (m+2)^2 * Cg * C_out`` multiplications and
      ``tiles * (m+2)^2 * (Cg - 1) * C_out`` additions (the sums over channels);
    * input transform ``B^T d B`` per tile and channel, output transform
      ``A^T M A`` per tile and output channel: the additions (and the
      multiplications by constants other than +-1) of the matrices as written;
    * offline: the filter transform ``G g G^T``, ``Cg * C_out * (9a + 3a^2)``
      multiply-adds with ``a = m + 2``.
    """
    Cg = C // groups
    BT, _, AT = TRANSFORMS[m]
    a = m + 2
    tiles = -(-Ho // m) * -(-Wo // m)
    bm, ba = _transform_ops(BT)                       # one a-vector through B^T
    am, aa = _transform_ops(AT)                       # one a-vector through A^T
    in_m, in_a = 2 * a * bm, 2 * a * ba               # B^T d, then (.) B: a columns / rows each
    out_m, out_a = a * am + m * am, a * aa + m * aa   # A^T M (a columns), then (.) A (m rows)
    mults = tiles * (a * a * Cg * C_out + C * in_m + C_out * out_m)
    adds = tiles * (a * a * (Cg - 1) * C_out + C * in_a + C_out * out_a)
    return {"mults": mults, "adds": adds, "offline": {"macs": Cg * C_out * (9 * a + 3 * a * a)}}
