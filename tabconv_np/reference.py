"""Plain NumPy references: the tests' oracles and the teaching versions.

Nothing here is fast, nothing here validates, and nothing here calls the
package's kernels: every function is written to be read next to the
definition of what it computes, in float64 where it sums, and each has the
signature of the fast function it checks (the correspondence is in each
docstring; :mod:`tabconv_np.pairs` lists the pairs and how closely they
agree):

=============================  =================================================
reference                      fast function
=============================  =================================================
:func:`conv2d_naive`           :func:`tabconv_np.functional.conv2d`
:func:`im2col_rows_naive`      :func:`tabconv_np.functional.im2col_rows`
:func:`encode_naive`           :func:`tabconv_np.pq.encode_rows`
:func:`build_table_naive`      :func:`tabconv_np.tables.table_from_weights`
:func:`lookup_naive`           the ``lookup`` kernel (``TableLinear.lookup``)
:func:`kmeanspp_naive`         the ``kmeanspp`` kernel (k-means++ seeding)
:func:`centroid_sums_naive`    the ``centroid_sums`` kernel (k-means update)
:func:`tree_encode_naive`      :func:`tabconv_np.hashtree.encode`, the tree layers' encoding
:func:`tree_lookup_naive`      the 8-bit ``lookup`` kernel (``TreeLinear.lookup``)
:func:`tree_conv_naive`        :class:`tabconv_np.tree_tables.TreeConv2d` (encoding from the tensor)
:func:`fit_trees_naive`        :func:`tabconv_np.hashtree.fit_trees` (learning the trees)
:func:`conv_epilogue_naive`    :class:`tabconv_np.plan.PreparedConv` (conv + bias, residual, clamp)
:func:`matmul_naive`           :func:`tabconv_np.conv.strassen.strassen`
:func:`quantize_naive`         :func:`tabconv_np.int8.quantize` (activations to 8 bits)
:func:`int8_conv_naive`        :func:`tabconv_np.int8.conv_quantized` (``Int8Conv2d``'s integer core)
:func:`lcnn_conv_naive`        :class:`tabconv_np.lcnn.LCNNConv2d` (dictionary conv + lookups)
:func:`rsdtr_conv_naive`       :class:`tabconv_np.rsdtr.RSDTRConv2d` (four tensor-ring sublayers)
:func:`sparse_conv_naive`      :class:`tabconv_np.sparse.SparseConv2d` (CSR weights, pruned)
:func:`xnor_conv_naive`        :func:`tabconv_np.binary.xnor_conv` (XNOR + popcount, fully binary)
:func:`binary_conv_naive`      :class:`tabconv_np.binary.BinaryConv2d` (binary/ternary weights, float inputs)
=============================  =================================================

The convolution is really a cross-correlation, as in every deep-learning
framework::

    y[n, o, p, q] = bias[o] + sum over c in group(o), i < kh, j < kw of
                    weight[o, c, i, j] * xpad[n, g*Cg + c, p*sh + i*dh, q*sw + j*dw]

where ``xpad`` is ``x`` with zero padding and ``g = o // (C_out/groups)``.

Product quantization (:mod:`tabconv_np.pq`) cuts a row of ``D`` numbers into
``C`` subspaces of ``Ds = ceil(D / C)`` columns, the last one(s) padded with
zero columns (:func:`pad_columns`).
"""
import numpy as np

from .validate import as_padding, as_pair


# ------------------------------------------------------------- convolution
def _padded_nchw(x, padding, kernel_hw, dilation, layout, dtype):
    """``x`` as NCHW ``dtype`` with its zero padding, and the padding as 4 ints."""
    x = np.asarray(x, dtype)
    if layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    top, bottom, left, right = as_padding(padding, kernel_hw, dilation)
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def conv2d_naive(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
                 layout="NCHW"):
    """2-D convolution (cross-correlation), by a loop over output positions.

    Reference for :func:`tabconv_np.functional.conv2d`, with its signature
    less ``method`` (``layout`` is keyword-only here).

    Parameters
    ----------
    x : array (N, C, H, W), or (N, H, W, C) for ``layout="NHWC"``
    weight : array (C_out, C/groups, kh, kw)
    bias : array (C_out,) or None
    stride, dilation : int or (int, int)
    padding : int, (ph, pw), (top, bottom, left, right), "valid" or "same"
    groups : int
    layout : "NCHW" or "NHWC" (of x and of the result)

    Returns
    -------
    float32 array (N, C_out, Ho, Wo) or (N, Ho, Wo, C_out), with
    ``Ho = (H + top + bottom - dh*(kh-1) - 1) // sh + 1`` (same for Wo).
    Sums are accumulated in float64; the result is rounded once to float32.
    """
    sh, sw = as_pair(stride, "stride")
    dh, dw = as_pair(dilation, "dilation")
    weight = np.asarray(weight, np.float64)
    C_out, Cg, kh, kw = weight.shape
    xpad = _padded_nchw(x, padding, (kh, kw), (dh, dw), layout, np.float64)
    N, C, Hp, Wp = xpad.shape
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
    y = y.astype(np.float32)
    return y if layout == "NCHW" else np.ascontiguousarray(y.transpose(0, 2, 3, 1))


def im2col_rows_naive(x, kernel_size, stride=1, padding=0, dilation=1, layout="NCHW"):
    """The im2col rows of a batch, one output position at a time.

    Reference for :func:`tabconv_np.functional.im2col_rows` (same signature
    and result)::

        rows[(n*Ho + p)*Wo + q, (c*kh + i)*kw + j] = xpad[n, c, p*sh + i*dh, q*sw + j*dw]

    Returns
    -------
    rows : float32 array (N*Ho*Wo, C*kh*kw)
        A copy of (float32-rounded) input values and zeros: equal bit for bit
        to the fast version.
    (N, Ho, Wo) : tuple of int
    """
    kh, kw = as_pair(kernel_size, "kernel_size")
    sh, sw = as_pair(stride, "stride")
    dh, dw = as_pair(dilation, "dilation")
    xpad = _padded_nchw(x, padding, (kh, kw), (dh, dw), layout, np.float32)
    N, C, Hp, Wp = xpad.shape
    Ho = (Hp - dh * (kh - 1) - 1) // sh + 1
    Wo = (Wp - dw * (kw - 1) - 1) // sw + 1
    rows = np.empty((N, Ho, Wo, C, kh, kw), np.float32)
    for p in range(Ho):
        for q in range(Wo):
            rows[:, p, q] = xpad[:, :, p * sh: p * sh + dh * (kh - 1) + 1: dh,
                                       q * sw: q * sw + dw * (kw - 1) + 1: dw]
    return rows.reshape(N * Ho * Wo, C * kh * kw), (N, Ho, Wo)


# ------------------------------------------------- product quantization
def pad_columns(X, C, Ds):
    """``X`` (N, D) with zero columns appended up to ``C*Ds`` columns, as (N, C, Ds)."""
    N, D = X.shape
    Xp = np.zeros((N, C * Ds), X.dtype)
    Xp[:, :D] = X
    return Xp.reshape(N, C, Ds)


def subspace_distances(X, codebooks):
    """Squared distances ``dist[n, c, k] = ||x_c - P[c, k]||^2`` in float64, (N, C, K).

    ``x_c`` is subspace ``c`` of row ``n`` of ``X`` (zero-padded to ``C*Ds`` columns).
    """
    C, K, Ds = codebooks.shape
    Xp = pad_columns(np.asarray(X, np.float64), C, Ds)          # (N, C, Ds)
    return ((Xp[:, :, None, :] - np.asarray(codebooks, np.float64)[None]) ** 2).sum(-1)


def encode_naive(X, codebooks):
    """Brute-force nearest prototype in float64: ``codes[n, c] = argmin_k ||x_c - P[c, k]||^2``.

    Reference for :func:`tabconv_np.pq.encode_rows` (and
    ``ProductQuantizer.encode``), same signature.  Ties go to the first
    prototype, as in the kernel; where two distances differ by less than
    float32 rounding the kernel may pick either.

    Parameters
    ----------
    X : array (N, D)
    codebooks : array (C, K, Ds)

    Returns
    -------
    int64 array (N, C)
    """
    return subspace_distances(X, codebooks).argmin(-1)


def build_table_naive(prototypes, wmat):
    """``T[c, k, m] = sum_d P[c, k, d] * Wpad[c*Ds + d, m]`` in float64, returned as float32.

    Reference for :func:`tabconv_np.tables.table_from_weights`, same signature.

    Parameters
    ----------
    prototypes : array (C, K, Ds)
    wmat : array (D, M), zero-padded here to ``C*Ds`` rows
    """
    C, K, Ds = np.shape(prototypes)
    D, M = np.shape(wmat)
    Wp = np.zeros((C * Ds, M))
    Wp[:D] = wmat
    return np.einsum("ckd,cdm->ckm", np.asarray(prototypes, np.float64),
                     Wp.reshape(C, Ds, M)).astype(np.float32)


def lookup_naive(codes, table, bias=None):
    """``y[n, m] = sum_c T[c, codes[n, c], m] + bias[m]`` in float64, returned as float32.

    Reference for the ``lookup`` kernel (what ``TableLinear.lookup`` and
    ``TableConv2d`` run), called as ``lookup(codes, table, bias)`` returning
    ``y``; see :func:`tabconv_np.pairs.lookup_tables`.

    Parameters
    ----------
    codes : integer array (N, C), values in [0, K)
    table : array (C, K, M)
    bias : array (M,) or None
    """
    C = np.shape(table)[0]
    y = np.asarray(table, np.float64)[np.arange(C)[None, :], np.asarray(codes, np.int64)].sum(1)
    if bias is not None:
        y += bias
    return y.astype(np.float32)


def kmeanspp_naive(X, x2, first, u):
    """k-means++ (D^2) seeding: the row indices of ``len(u)`` centres among the rows of ``X``.

    Reference for the ``kmeanspp`` kernel, called as ``kmeanspp(X, x2, first,
    u)`` returning the indices (:func:`tabconv_np.pairs.kmeanspp_seeds`).
    Centre 0 is row ``first``; centre ``i >= 1`` is the first row whose
    running sum of ``mind`` (squared distance to the nearest centre so far)
    exceeds ``u[i] * sum(mind)``, or row ``floor(u[i] * N)`` when every row
    sits on a centre.

    Parameters
    ----------
    X : array (N, d)
    x2 : array (N,)
        ``||X[n]||^2`` (unused here: distances are computed directly).
    first : int
    u : array (K,) of uniform draws in [0, 1)

    Returns
    -------
    int64 array (K,)

    The kernel computes distances as ``x2[n] - 2<X[n], X[c]> + x2[c]`` from
    float32 dot products; on other data the two can break near-ties of the
    sampling differently.
    """
    X = np.asarray(X, np.float64)
    N = len(X)
    out = np.empty(len(u), np.int64)
    out[0] = first
    mind = ((X - X[first]) ** 2).sum(1)
    for i in range(1, len(u)):
        total = mind.sum()
        if total <= 0:
            c = min(N - 1, int(u[i] * N))
        else:
            c = min(N - 1, int(np.searchsorted(np.cumsum(mind), u[i] * total, side="right")))
        out[i] = c
        mind = np.minimum(mind, ((X - X[c]) ** 2).sum(1))
    return out


def centroid_sums_naive(X, labels, K):
    """Per-cluster sums (float64) and counts of the rows of ``X``.

    Reference for the ``centroid_sums`` kernel, called as
    ``centroid_sums(X, labels, K)`` returning ``(sums, counts)``
    (:func:`tabconv_np.pairs.centroid_sums`)::

        sums[k] = sum of X[n] over n with labels[n] == k    (float64, (K, d))
        counts[k] = number of such n                         (int64, (K,))
    """
    X = np.asarray(X, np.float64)
    labels = np.asarray(labels, np.int64)
    sums = np.zeros((K, X.shape[1]))
    np.add.at(sums, labels, X)
    return sums, np.bincount(labels, minlength=K).astype(np.int64)


# ------------------------------------------------------------ hash trees
def tree_encode_naive(X, split_cols, thresholds):
    """Leaf of every row in every depth-4 tree, by walking the trees one comparison at a time.

    Reference for :func:`tabconv_np.hashtree.encode` (and the tree layers'
    encoding from the tensor, on the im2col rows of the same input)::

        node = 0
        for t in range(4):
            node = 2*node + (X[n, split_cols[c, t]] > thresholds[c, 2**t - 1 + node])
        codes[n, c] = node
    """
    X = np.asarray(X, np.float32)
    C = len(split_cols)
    codes = np.zeros((len(X), C), np.uint8)
    for n in range(len(X)):
        for c in range(C):
            node = 0
            for t in range(4):
                right = X[n, split_cols[c, t]] > thresholds[c, (1 << t) - 1 + node]
                node = 2 * node + int(right)
            codes[n, c] = node
    return codes


def tree_lookup_naive(codes, table8, step, bias):
    """``y[n, m] = step[m] * sum_c table8[c, codes[n, c], m] + bias[m]`` in float64.

    Reference for the 8-bit lookup of :mod:`tabconv_np.tree_tables`
    (``TreeLinear.lookup``); the integer sum is exact, so the two differ only
    by the float32 rounding of the final multiply-add.
    """
    codes = np.asarray(codes, np.intp)
    T = np.asarray(table8, np.int64)
    acc = np.zeros((len(codes), T.shape[2]), np.int64)
    for c in range(T.shape[0]):
        acc += T[c, codes[:, c]]
    return acc * np.asarray(step, np.float64) + np.asarray(bias, np.float64)


def tree_conv_naive(x, split_cols, thresholds, table8, step, bias, kernel_size, stride=1, padding=0,
                    dilation=1, layout="NCHW"):
    """A hash-tree table convolution through its im2col rows: lower, walk the trees, look up.

    Reference for :class:`tabconv_np.tree_tables.TreeConv2d`, which reads the
    trees' values straight from the tensor instead of lowering it.  Returns
    float64 ``(N, M, Ho, Wo)`` (``(N, Ho, Wo, M)`` for NHWC).
    """
    rows, (N, Ho, Wo) = im2col_rows_naive(x, kernel_size, stride, padding, dilation, layout)
    y = tree_lookup_naive(tree_encode_naive(rows, split_cols, thresholds), table8, step, bias)
    y = y.reshape(N, Ho, Wo, -1)
    return y if layout == "NHWC" else y.transpose(0, 3, 1, 2)


# ------------------------------------------------------- learning hash trees
def pairwise_sum(A):
    """Sum over the last axis of a float64 array, in NumPy's pairwise order.

    The order (what ``A.sum(-1)`` does on a C-contiguous float64 array):
    fewer than 8 terms are added one after the other from 0; up to 128 terms
    go to 8 running partial sums ``r[j]`` (terms ``j, j+8, j+16, ...`` up to a
    multiple of 8), combined as ``((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7))``, then
    the remaining ``n % 8`` terms are added one by one; above 128 terms the
    first half (rounded down to a multiple of 8) and the rest are summed so and
    added.  Spelled out here so that the result does not depend on NumPy's
    internals; the hash-tree learning kernel sums a subspace's columns in this
    order.
    """
    A = np.asarray(A, np.float64)
    n = A.shape[-1]
    if n < 8:
        s = np.zeros(A.shape[:-1])
        for k in range(n):
            s = s + A[..., k]
        return s
    if n <= 128:
        m = n - n % 8
        r = [A[..., j] for j in range(8)]
        for i in range(8, m, 8):
            r = [r[j] + A[..., i + j] for j in range(8)]
        s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for k in range(m, n):
            s = s + A[..., k]
        return s
    h = n // 2
    h -= h % 8
    return pairwise_sum(A[..., :h]) + pairwise_sum(A[..., h:])


def sequential_sum(A):
    """Sum over the first axis of a float64 array, one row after another starting from +0.0.

    (What ``A.sum(0)`` does on a C-contiguous array of two or more columns;
    with a single column NumPy sums pairwise instead.)  ``+ 0.0`` turns a sum
    of -0.0 terms into +0.0, as a sum started from +0.0 gives.
    """
    A = np.asarray(A, np.float64)
    return np.cumsum(A, 0)[-1] + 0.0 if len(A) else np.zeros(A.shape[1:])


def _best_tree_split(S, v):
    """``(loss, threshold)``: the split of bucket rows ``S`` (n, ds) float64 on values ``v`` (n,)
    float32 that minimises the children's summed squared error (:func:`fit_trees_naive`)."""
    n = len(v)
    if n < 2:
        return 0.0, np.float32(v.max() if n else 0.0)
    order = np.argsort(v, kind="stable")
    vs, Y = v[order], S[order]
    cum, cum2 = np.cumsum(Y, 0), np.cumsum(Y * Y, 0)                 # row after row, sorted order
    i = np.arange(1, n)[:, None]                                     # left = first i rows
    left = pairwise_sum(cum2[:-1] - cum[:-1] ** 2 / i)
    right = pairwise_sum((cum2[-1] - cum2[:-1]) - (cum[-1] - cum[:-1]) ** 2 / (n - i))
    loss = left + right
    loss[vs[:-1] == vs[1:]] = np.inf                                 # only between distinct values
    j = int(np.argmin(loss))                                         # the first minimum
    if not np.isfinite(loss[j]):                                     # all values equal: no split
        return float(pairwise_sum(cum2[-1] - cum[-1] ** 2 / n)), vs[-1]
    t = np.float32((np.float64(vs[j]) + np.float64(vs[j + 1])) / 2)
    if not vs[j] <= t < vs[j + 1]:                                   # midpoint rounded onto vs[j+1]
        t = vs[j]
    return float(loss[j]), t


def fit_trees_naive(X, n_codebooks, candidates=4):
    """One depth-4 hash tree per subspace, learned greedily level by level.

    Reference for :func:`tabconv_np.hashtree.fit_trees`; returns its three
    arrays ``(split_cols (C, 4) int32, thresholds (C, 16) float32,
    prototypes (C, 16, Ds) float32)``.  Subspace ``c`` is columns
    ``[c*Ds, min((c+1)*Ds, D))``, ``Ds = ceil(D / C)``; its values ``S`` in
    float64.  Level ``t`` has ``2**t`` buckets of rows (in row order):

    * every column's squared error ``sse[d]``: summed over the non-empty
      buckets (in bucket order) of ``sum over the bucket's rows of
      (S[r, d] - mean_d)**2``, the mean and the sum taken row after row;
    * candidates: the ``candidates`` columns of largest ``sse``
      (``argsort(-sse, kind="stable")``: ties to the lower column);
    * each candidate column ``d``, each bucket: rows stably sorted by column
      ``d`` (float32 values), running sums of the rows and squared rows
      (float64, row after row), and at each position ``i`` between two
      distinct sorted values the loss ``sum over columns of (cum2 - cum**2/i)
      + sum over columns of ((tot2 - cum2) - (tot - cum)**2/(n - i))``, the
      column sums in :func:`pairwise_sum` order; the first minimum wins, its
      threshold is the float32 midpoint of the two values (the left value if
      the midpoint rounds onto the right one).  A bucket of fewer than 2 rows:
      loss 0, threshold its value (0.0 if empty); all values equal: loss the
      bucket's squared error, threshold the value;
    * the candidate with the strictly smallest total loss (summed over the
      buckets in order) wins; each bucket splits into ``value <= threshold``
      (left child, heap index ``2j``) and ``value > threshold`` (``2j + 1``).

    The prototypes are the leaves' row means (summed row after row, float64,
    then rounded to float32); zeros for empty leaves and padding columns.
    """
    X = np.asarray(X, np.float32)
    N, D = X.shape
    C = int(n_codebooks)
    Ds = -(-D // C)
    cols = np.zeros((C, 4), np.int32)
    thr = np.zeros((C, 16), np.float32)
    P = np.zeros((C, 16, Ds), np.float32)
    for c in range(C):
        lo, hi = c * Ds, min((c + 1) * Ds, D)
        V = X[:, lo:hi]
        S = V.astype(np.float64)
        buckets = [np.arange(N)]
        for t in range(4):
            sse = sum(sequential_sum((S[b] - sequential_sum(S[b]) / len(b)) ** 2)
                      for b in buckets if len(b))
            best = None
            for d in np.argsort(-sse, kind="stable")[:candidates]:
                splits = [_best_tree_split(S[b], V[b, d]) for b in buckets]
                total = sum(s[0] for s in splits)
                if best is None or total < best[0]:
                    best = (total, int(d), [s[1] for s in splits])
            _, d, ts = best
            cols[c, t] = lo + d
            children = []
            for j, (b, th) in enumerate(zip(buckets, ts)):
                thr[c, (1 << t) - 1 + j] = th
                right = V[b, d] > th
                children += [b[~right], b[right]]
            buckets = children
        for k, b in enumerate(buckets):
            if len(b):
                P[c, k, :hi - lo] = sequential_sum(S[b]) / len(b)
    return cols, thr, P


def conv_epilogue_naive(x, weight, bias, stride, padding, dilation, residual, lo, hi, layout="NHWC",
                        method=None):
    """``clamp(conv2d(x, weight, bias) + residual, lo, hi)`` in float64, ``layout`` in and out.

    Reference for :class:`tabconv_np.plan.PreparedConv`: the convolution
    with its epilogue (bias, residual sum, ReLU/Clip) as separate plain steps.
    ``residual`` None: no sum.  ``method`` (the fast side's conv method) is not used.
    """
    y = conv2d_naive(x, weight, bias, stride, padding, dilation, layout=layout).astype(np.float64)
    if residual is not None:
        y = y + residual
    return np.minimum(np.maximum(y, lo), hi)


def matmul_naive(A, B, levels=None, cutoff=None):
    """``A @ B`` in float64, one dot product per entry.

    Reference for :func:`tabconv_np.conv.strassen.strassen` (``levels`` and
    ``cutoff`` are the fast side's settings, not used here).
    """
    A, B = np.asarray(A, np.float64), np.asarray(B, np.float64)
    C = np.empty((A.shape[0], B.shape[1]))
    for i in range(A.shape[0]):
        for j in range(B.shape[1]):
            C[i, j] = A[i] @ B[:, j]
    return C


# ------------------------------------------------------------- int8 quantisation
def quantize_naive(x, scale, zero_point, activations="asymmetric"):
    """``clamp(rint(x * (1/scale)) + zero_point, lo, hi)``, in float32 as the kernel rounds.

    Reference for :func:`tabconv_np.int8.quantize`: uint8 in [0, 255]
    (asymmetric) or int8 in [-127, 127] (symmetric).
    """
    lo, hi, dtype = (0, 255, np.uint8) if activations == "asymmetric" else (-127, 127, np.int8)
    inv = np.float32(1) / np.float32(scale)
    q = np.rint(np.asarray(x, np.float32) * inv) + np.float32(zero_point)
    return np.clip(q, lo, hi).astype(dtype)


def int8_conv_naive(xq, zero_point, weight, weight_scale, input_scale, bias, stride=1, padding=(0, 0, 0, 0),
                    dilation=1, layout="NCHW"):
    """The int8 convolution as integer loops: exact sums, then one float32 multiply-add.

    Reference for :func:`tabconv_np.int8.conv_quantized` (same arguments: ``weight``
    int8 (M, kh, kw, C), padding (top, bottom, left, right), filled with the zero point)::

        acc[n, m, p, q] = sum over c, i, j of (xpad[n, c, p*sh + i*dh, q*sw + j*dw] - z) * weight[m, i, j, c]
        y = float32(acc) * float32(input_scale * weight_scale[m]) + bias[m]

    in int64 (the fast side's int32 cannot overflow for the sizes the layers accept).
    """
    x = np.asarray(xq).astype(np.int64)
    if layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    top, bottom, left, right = padding
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=zero_point) - zero_point
    (sh, sw), (dh, dw) = as_pair(stride, "stride"), as_pair(dilation, "dilation")
    M, kh, kw, C = weight.shape
    w = np.asarray(weight).astype(np.int64)
    N, _, Hp, Wp = x.shape
    Ho, Wo = (Hp - dh * (kh - 1) - 1) // sh + 1, (Wp - dw * (kw - 1) - 1) // sw + 1
    acc = np.zeros((N, M, Ho, Wo), np.int64)
    for p in range(Ho):
        for q in range(Wo):
            win = x[:, :, p * sh:p * sh + dh * (kh - 1) + 1:dh, q * sw:q * sw + dw * (kw - 1) + 1:dw]
            acc[:, :, p, q] = np.einsum("ncij,mijc->nm", win, w)
    scale = (np.float32(input_scale) * np.asarray(weight_scale, np.float32)).reshape(1, -1, 1, 1)
    y = acc.astype(np.float32) * scale + np.asarray(bias, np.float32).reshape(1, -1, 1, 1)
    return y if layout == "NCHW" else y.transpose(0, 2, 3, 1)
# ------------------------------------------------------------- LCNN
def lcnn_conv_naive(x, dictionary, indices, coefs, bias, stride=1, padding=0, dilation=1,
                    layout="NCHW"):
    """The LCNN convolution as the dense convolution of its rebuilt filters.

    Reference for :class:`tabconv_np.lcnn.LCNNConv2d` (called with its
    parameters): ``W[o, :, i, j] = sum_t coefs[o, i, j, t] * dictionary[indices[o, i, j, t]]``
    in float64, then :func:`conv2d_naive`.

    dictionary (k, C_in); indices, coefs (C_out, kh, kw, s); bias (C_out,).
    """
    D = np.asarray(dictionary, np.float64)
    C_out, kh, kw, s = np.shape(indices)
    W = np.zeros((C_out, D.shape[1], kh, kw))
    for o in range(C_out):
        for i in range(kh):
            for j in range(kw):
                for t in range(s):
                    W[o, :, i, j] += coefs[o, i, j, t] * D[indices[o, i, j, t]]
    return conv2d_naive(x, W, bias, stride, padding, dilation, layout=layout)


# ------------------------------------------------------------- RSDTR
def rsdtr_conv_naive(x, core_out, core_in, core_h, core_w, bias, stride=1, padding=0, dilation=1,
                     layout="NCHW"):
    """The tensor-ring convolution as the dense convolution of its rebuilt kernel.

    Reference for :class:`tabconv_np.rsdtr.RSDTRConv2d` (called with its
    parameters): ``W[o, c, i, j] = trace(core_out[:, o, :] core_in[:, c, :]
    core_h[:, i, :] core_w[:, j, :])`` in float64, one entry at a time, then
    :func:`conv2d_naive`.  Cores (r3, C_out, r0), (r0, C_in, r1), (r1, kH, r2), (r2, kW, r3).
    """
    G = [np.asarray(c, np.float64) for c in (core_out, core_in, core_h, core_w)]
    C_out, C_in, kh, kw = G[0].shape[1], G[1].shape[1], G[2].shape[1], G[3].shape[1]
    W = np.zeros((C_out, C_in, kh, kw))
    for o in range(C_out):
        for c in range(C_in):
            for i in range(kh):
                for j in range(kw):
                    W[o, c, i, j] = np.trace(G[0][:, o, :] @ G[1][:, c, :] @ G[2][:, i, :] @ G[3][:, j, :])
    return conv2d_naive(x, W, bias, stride, padding, dilation, layout=layout)


def sparse_conv_naive(x, data, indices, indptr, bias, weight_shape, stride=1, padding=0, dilation=1,
                      layout="NCHW"):
    """The pruned convolution as the dense convolution of its CSR weights.

    Reference for :class:`tabconv_np.sparse.SparseConv2d`: the weight
    ``(C_out, C, kh, kw)`` rebuilt entry by entry from the compressed rows
    (row ``o``: values ``data[indptr[o]:indptr[o+1]]`` at lowered columns
    ``indices[...]``, ``(c*kh + i)*kw + j``), in float64, then :func:`conv2d_naive`.
    """
    C_out = len(indptr) - 1
    W = np.zeros((C_out, int(np.prod(weight_shape[1:]))))
    for o in range(C_out):
        for p in range(indptr[o], indptr[o + 1]):
            W[o, indices[p]] = data[p]
    return conv2d_naive(x, W.reshape(weight_shape), bias, stride, padding, dilation, layout=layout)


# ------------------------------------------------------------- binary and ternary
def bit_values(words, D):
    """Packed rows (uint64 ``(M, words)``) to 0/1 ints ``(M, D)``: value ``d`` is bit ``d % 64`` of
    word ``d // 64``."""
    out = np.zeros((len(words), D), np.int64)
    for m in range(len(words)):
        for d in range(D):
            out[m, d] = (int(words[m, d // 64]) >> (d % 64)) & 1
    return out


def signed_weights(weight_sign, weight_mask, weight_shape):
    """The {-1, 1} weights (ternary: times the 0/1 mask), float64 ``weight_shape`` (M, C, kh, kw)."""
    D = int(np.prod(weight_shape[1:]))
    w = 2.0 * bit_values(weight_sign, D) - 1
    if weight_mask is not None:
        w = w * bit_values(weight_mask, D)
    return w.reshape(weight_shape)


def xnor_conv_naive(x, weight_sign, weight_mask, weight_shape, stride=1, padding=0, dilation=1, layout="NCHW"):
    """The fully binary convolution as the float convolution of the +-1 tensors, as int32.

    Reference for :func:`tabconv_np.binary.xnor_conv`: the input ``x`` zero
    padded, then ``+1`` where ``> 0`` and ``-1`` elsewhere (so padding is -1);
    the weights from their bit planes (:func:`signed_weights`); then
    :func:`conv2d_naive` with no further padding.  Every sum is a small integer,
    exact in float64.
    """
    x = np.asarray(x, np.float64)
    if layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    (kh, kw), dil = weight_shape[2:], as_pair(dilation, "dilation")
    top, bottom, left, right = as_padding(padding, (kh, kw), dil)
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))            # zero padding
    s = np.where(xp > 0, 1.0, -1.0)                                          # then the sign
    y = conv2d_naive(s, signed_weights(weight_sign, weight_mask, weight_shape), None, stride, 0, dilation)
    y = np.rint(y).astype(np.int32)
    return y if layout == "NCHW" else y.transpose(0, 2, 3, 1)


def binary_conv_naive(x, weight_sign, weight_mask, weight_scale, bias, weight_shape, stride=1, padding=0,
                      dilation=1, layout="NCHW"):
    """The binary (ternary) weights with float inputs as the dense convolution of ``alpha * T``.

    Reference for :class:`tabconv_np.binary.BinaryConv2d` with
    ``activations="float"``: ``W[m] = weight_scale[m] * T[m]``, ``T`` from the
    bit planes, in float64, then :func:`conv2d_naive`.
    """
    W = signed_weights(weight_sign, weight_mask, weight_shape) * np.reshape(weight_scale, (-1, 1, 1, 1))
    return conv2d_naive(x, W, bias, stride, padding, dilation, layout=layout)
