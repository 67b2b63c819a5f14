"""Hash-tree (MADDNESS) learning kernels: one depth-4 tree per subspace.

What is computed is defined by :func:`tabconv_np.reference.fit_trees_naive`
(the module docstring of :mod:`tabconv_np.hashtree` says it in words); these
kernels compute the same numbers bit for bit, in the same float64 summation
orders: rows one after another from 0 (in row order for a bucket's means,
squared errors and the prototypes, in sorted order for the running sums of
a split), a subspace's columns in NumPy's pairwise order
(:func:`tabconv_np.reference.pairwise_sum`).  What changes is how the rows
are visited:

* each candidate column is sorted once per subspace (a stable LSD radix sort
  of the float32 values, -0.0 tied with +0.0), and a bucket's rows in the
  column's order are that order filtered by bucket (a stable counting pass
  over the rows' bucket numbers), instead of a sort per bucket and level;
* one pass over a bucket's sorted rows keeps the running sums and copies
  them at the positions between distinct values only; the totals are the
  running sums at the end, and the losses of the copied positions follow
  (no ``(n, Ds)`` cumulative arrays, no loss at positions between equal
  values);
* the subspace's columns are copied once into a small contiguous block.

Codebooks are independent: :data:`fit` runs ``tasks`` tasks (``prange``),
one a thread, each with its own scratch, learning every ``tasks``-th
subspace; a subspace's result depends on nothing else, so the serial and
parallel entries (and any ``tasks``) agree bitwise.  No validation here
(see :func:`tabconv_np.hashtree.fit_trees`).
"""
import numba
import numpy as np
from numba import prange

from ._jit import CACHE, kernel

#: Tree depth and leaves per tree.
DEPTH = 4
N_LEAVES = 1 << DEPTH
#: Bits of the float32 sort key per radix pass (3 passes cover 32 bits).
RADIX_BITS = 11


def _helper(fn, inline="never"):
    """A jitted helper.  NumPy's error model: no zero-divisor checks in the loops (no
    divisor here is ever zero)."""
    return numba.njit(cache=CACHE, error_model="numpy", inline=inline)(fn)


def _pairwise_block_py(a, lo, n):
    """``a[lo:lo+n]`` summed in NumPy's pairwise order, for ``n <= 128``."""
    if n < 8:
        s = 0.0
        for k in range(lo, lo + n):
            s += a[k]
        return s
    m = lo + n - n % 8
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    for i in range(lo + 8, m, 8):
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
    s = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for k in range(m, lo + n):
        s += a[k]
    return s


_pairwise_block = _helper(_pairwise_block_py, "always")


def _pairwise_py(a, lo, n):
    """``a[lo:lo+n]`` summed in NumPy's pairwise order: above 128 terms, the first half
    (a multiple of 8 long) and the rest, each so, added.

    The recursion runs on an explicit stack: Numba's on-disk cache does not load
    recursive functions reliably (a cached self-recursive call crashed).
    """
    if n <= 128:
        return _pairwise_block(a, lo, n)
    st_lo = np.empty(64, np.int64)
    st_n = np.empty(64, np.int64)
    st_stage = np.empty(64, np.int64)
    vals = np.empty(64)
    sp, nv = 0, 0
    st_lo[0], st_n[0], st_stage[0] = lo, n, 0
    while sp >= 0:
        m = st_n[sp]
        if m <= 128:
            vals[nv] = _pairwise_block(a, st_lo[sp], m)
            nv += 1
            sp -= 1
            continue
        h = m // 2
        h -= h % 8
        stage = st_stage[sp]
        st_stage[sp] = stage + 1
        if stage == 0:                                      # the first half
            st_lo[sp + 1], st_n[sp + 1], st_stage[sp + 1] = st_lo[sp], h, 0
            sp += 1
        elif stage == 1:                                    # the rest
            st_lo[sp + 1], st_n[sp + 1], st_stage[sp + 1] = st_lo[sp] + h, m - h, 0
            sp += 1
        else:                                               # both done: first + rest
            vals[nv - 2] = vals[nv - 2] + vals[nv - 1]
            nv -= 1
            sp -= 1
    return vals[0]


_pairwise = _helper(_pairwise_py)


def _colsum_py(a, n):
    """``a[:n]`` summed in NumPy's pairwise order."""
    if n <= 128:
        return _pairwise_block(a, 0, n)
    return _pairwise(a, 0, n)


_colsum = _helper(_colsum_py, "always")


def _argsort_column_py(col, out, keys, tmpk, tmpi, hist):
    """``out`` = the stable argsort of ``col`` (N,) float32, finite, contiguous: ascending
    values, equal values (-0.0 and +0.0 among them) in index order.

    LSD radix sort of an order-preserving uint32 key, ``RADIX_BITS`` bits a pass;
    a pass where every key has the same digit is skipped.  ``keys``, ``tmpk`` (N,)
    uint32, ``tmpi`` (N,) int32 and ``hist`` (2**RADIX_BITS,) int64 are scratch.
    """
    n = col.shape[0]
    bits = col.view(np.uint32)
    for i in range(n):
        b = np.int64(bits[i])
        if col[i] == 0:
            b = 0x80000000                                  # -0.0 ties +0.0
        elif b >= 0x80000000:
            b = 0xFFFFFFFF - b                              # negative: larger magnitude first
        else:
            b = b + 0x80000000
        keys[i] = b
        out[i] = i
    nbins = 1 << RADIX_BITS
    mask = nbins - 1
    in_out = True                                           # the current order is in out/keys
    for shift in range(0, 32, RADIX_BITS):
        hist[:] = 0
        if in_out:
            sk, si, dk, di = keys, out, tmpk, tmpi
        else:
            sk, si, dk, di = tmpk, tmpi, keys, out
        for i in range(n):
            hist[(np.int64(sk[i]) >> shift) & mask] += 1
        skip = False
        for h in range(nbins):
            if hist[h] == n:
                skip = True
        if skip:
            continue
        acc = 0
        for h in range(nbins):
            c = hist[h]
            hist[h] = acc
            acc += c
        for i in range(n):
            g = (np.int64(sk[i]) >> shift) & mask
            p = hist[g]
            dk[p] = sk[i]
            di[p] = si[i]
            hist[g] = p + 1
        in_out = not in_out
    if not in_out:
        out[:] = tmpi


_argsort_column = _helper(_argsort_column_py)


def _split_py(S, d, rows, s, n, prefix, at, c1, c2, L, R):
    """``(loss, threshold)`` of the best split on column ``d`` of the bucket whose rows,
    sorted by that column, are ``rows[s:s+n]`` (``reference._best_tree_split``).

    S (N, ds) float32: the subspace.  One pass over the rows keeps the running
    sums ``c1``, ``c2`` (ds,) float64 of the rows and squared rows and copies them
    into ``prefix[m, :ds]``, ``prefix[m, ds:]`` ((N, 2*ds) float64) at each position
    ``at[m]`` between distinct values; at the end they hold the totals, and the
    losses of the copied positions follow (L, R (ds,) float64 scratch).
    """
    ds = S.shape[1]
    if n < 2:
        if n == 1:
            return 0.0, S[rows[s], d]
        return 0.0, np.float32(0.0)
    for e in range(ds):
        c1[e] = 0.0
        c2[e] = 0.0
    prev = S[rows[s], d]
    m = 0
    for p in range(n):                                      # left = the first p rows
        r = rows[s + p]
        v = S[r, d]
        if v != prev:                                       # only between distinct values
            pm = prefix[m]
            for e in range(ds):
                pm[e] = c1[e]
                pm[ds + e] = c2[e]
            at[m] = p
            m += 1
            prev = v
        for e in range(ds):
            y = np.float64(S[r, e])
            c1[e] += y
            c2[e] += y * y
    if m == 0:                                              # all values equal: no split
        fn = np.float64(n)
        for e in range(ds):
            L[e] = c2[e] - c1[e] * c1[e] / fn
        return _colsum(L, ds), S[rows[s + n - 1], d]
    best = np.inf
    bj = 0
    for j in range(m):
        pm = prefix[j]
        p = at[j]
        fl = np.float64(p)
        fr = np.float64(n - p)
        for e in range(ds):
            a1 = pm[e]
            a2 = pm[ds + e]
            L[e] = a2 - a1 * a1 / fl
            q = c1[e] - a1
            R[e] = (c2[e] - a2) - q * q / fr
        loss = _colsum(L, ds) + _colsum(R, ds)
        if loss < best:                                     # the first minimum
            best = loss
            bj = p
    a = S[rows[s + bj - 1], d]
    b = S[rows[s + bj], d]
    t = np.float32((np.float64(a) + np.float64(b)) / 2.0)
    if not (a <= t and t < b):                              # midpoint rounded onto b
        t = a
    return best, t


_split = _helper(_split_py)


def _bucket_sums_py(S, node, counts, sums):
    """``counts[k]``, ``sums[k]``: rows in bucket ``node[r] == k`` and their column sums
    (float64, rows in row order from 0)."""
    counts[:] = 0
    sums[:, :] = 0.0
    for r in range(S.shape[0]):
        k = node[r]
        counts[k] += 1
        sk = sums[k]
        for e in range(S.shape[1]):
            sk[e] += np.float64(S[r, e])


_bucket_sums = _helper(_bucket_sums_py, "always")


def _sort_slots_py(ds, cand):
    """Columns sorted at most in a subspace of ``ds`` columns: ``cand`` candidates a level."""
    return min(ds, min(cand, ds) * DEPTH)


sort_slots = _helper(_sort_slots_py)


def _fit_subspace_py(X, lo, ds, cand, cols, thr, P, Sbuf, obuf, pbuf, at, node, rows, col, keys,
                     tmpk, tmpi, hist):
    """The tree of the subspace of columns ``[lo, lo + ds)`` of ``X`` (N, D) float32, with
    ``cand`` candidate columns a level, into ``cols`` (4,) int32, ``thr`` (16,) float32 and
    ``P`` (16, Ds) float32 (every entry written).

    Scratch: Sbuf (N*Ds,) float32, obuf (sort_slots(Ds, cand)*N,) int32, pbuf (N*2*Ds,)
    float64, at (N,) int64, node (N,) int64, rows (N,) int32, col (N,) float32, keys, tmpk (N,)
    uint32, tmpi (N,) int32, hist (2**RADIX_BITS,) int64.
    """
    N = X.shape[0]
    S = Sbuf[:N * ds].reshape((N, ds))                      # the subspace, contiguous
    for r in range(N):
        for e in range(ds):
            S[r, e] = X[r, lo + e]
    order = obuf[:sort_slots(ds, cand) * N].reshape((-1, N))    # stable argsorts of columns
    prefix = pbuf[:N * 2 * ds].reshape((N, 2 * ds))         # running sums at split positions
    slot = np.full(ds, -1, np.int64)                        # the order of column d: order[slot[d]]
    used = 0
    node[:] = 0                                             # bucket of each row
    counts = np.zeros(N_LEAVES, np.int64)
    starts = np.zeros(N_LEAVES + 1, np.int64)
    fill = np.zeros(N_LEAVES, np.int64)
    sums = np.zeros((N_LEAVES, ds))
    dev = np.zeros((N_LEAVES, ds))
    sse = np.zeros(ds)
    taken = np.zeros(ds, np.bool_)
    ths = np.zeros(N_LEAVES // 2, np.float32)
    best_ths = np.zeros(N_LEAVES // 2, np.float32)
    c1, c2 = np.empty(ds), np.empty(ds)
    L, R = np.empty(ds), np.empty(ds)
    ncand = min(cand, ds)
    for t in range(DEPTH):
        nb = 1 << t
        # the columns' squared errors over the buckets (rows in row order)
        _bucket_sums(S, node[:N], counts, sums)
        dev[:, :] = 0.0
        for k in range(nb):
            if counts[k] > 0:
                for e in range(ds):
                    sums[k, e] = sums[k, e] / np.float64(counts[k])    # the mean
        for r in range(N):
            k = node[r]
            sk = sums[k]
            dk = dev[k]
            for e in range(ds):
                q = np.float64(S[r, e]) - sk[e]
                dk[e] += q * q
        for e in range(ds):
            sse[e] = 0.0
            taken[e] = False
        for k in range(nb):
            if counts[k] > 0:
                for e in range(ds):
                    sse[e] += dev[k, e]
        starts[0] = 0
        for k in range(nb):
            starts[k + 1] = starts[k] + counts[k]
        best_total = np.inf
        best_d = -1
        for qi in range(ncand):
            d = -1                                          # largest sse, ties to the lower column
            for e in range(ds):
                if not taken[e] and (d < 0 or sse[e] > sse[d]):
                    d = e
            taken[d] = True
            if slot[d] < 0:                                 # sorted at its first use
                for r in range(N):
                    col[r] = S[r, d]
                slot[d] = used
                used += 1
                _argsort_column(col, order[slot[d]], keys, tmpk, tmpi, hist)
            od = order[slot[d]]
            if nb == 1:
                grouped = od
            else:                                           # group by bucket, stably
                for k in range(nb):
                    fill[k] = starts[k]
                for p in range(N):
                    r = od[p]
                    k = node[r]
                    rows[fill[k]] = r
                    fill[k] += 1
                grouped = rows
            total = 0.0
            for k in range(nb):
                loss, th = _split(S, d, grouped, starts[k], counts[k], prefix, at, c1, c2, L, R)
                total += loss
                ths[k] = th
            if qi == 0 or total < best_total:               # strictly smaller: first on ties
                best_total = total
                best_d = d
                for k in range(nb):
                    best_ths[k] = ths[k]
        cols[t] = lo + best_d
        for k in range(nb):
            thr[nb - 1 + k] = best_ths[k]
        for r in range(N):                                  # left: <= threshold, right: >
            k = node[r]
            node[r] = 2 * k + (1 if S[r, best_d] > best_ths[k] else 0)
    thr[N_LEAVES - 1] = 0.0
    _bucket_sums(S, node[:N], counts, sums)                 # prototypes: the leaves' means
    for k in range(N_LEAVES):
        for e in range(P.shape[1]):
            if e < ds and counts[k] > 0:
                P[k, e] = np.float32(sums[k, e] / np.float64(counts[k]))
            else:
                P[k, e] = 0.0


_fit_subspace = _helper(_fit_subspace_py)


def _fit(X, Ds, cand, tasks, cols, thr, P):
    """One tree per subspace ``c`` (columns ``[c*Ds, min((c+1)*Ds, D))``, none empty).

    X (N, D) float32, N >= 2, finite; Ds, cand, tasks: ints >= 1; outputs cols
    (C, 4) int32, thr (C, 16) float32, P (C, 16, Ds) float32, every entry
    written.  Task ``w`` (one per thread) allocates its scratch once and
    learns subspaces ``w, w + tasks, ...``; a subspace's result does not
    depend on which task learns it, nor on ``tasks``.
    """
    N, D = X.shape
    C = cols.shape[0]
    for w in prange(tasks):
        Sbuf = np.empty(N * Ds, np.float32)
        obuf = np.empty(sort_slots(Ds, cand) * N, np.int32)
        pbuf = np.empty(N * 2 * Ds)
        at = np.empty(N, np.int64)
        node = np.empty(N, np.int64)
        rows = np.empty(N, np.int32)
        col = np.empty(N, np.float32)
        keys = np.empty(N, np.uint32)
        tmpk = np.empty(N, np.uint32)
        tmpi = np.empty(N, np.int32)
        hist = np.empty(1 << RADIX_BITS, np.int64)
        for c in range(w, C, tasks):
            lo = c * Ds
            _fit_subspace(X, lo, min(Ds, D - lo), cand, cols[c], thr[c], P[c], Sbuf, obuf, pbuf, at,
                          node, rows, col, keys, tmpk, tmpi, hist)


fit = kernel(_fit)
