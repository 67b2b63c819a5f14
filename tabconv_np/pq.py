"""Product quantization (PQ): the prototypes behind the table layers.

A row ``x`` of ``D`` numbers (an im2col row of a convolution, or a linear
layer's input) is cut into ``C`` contiguous subspaces of ``Ds = ceil(D / C)``
columns (zero columns appended to the last one(s) when ``C`` does not divide
``D``, as in the TabConv authors' code).  Each subspace gets its own codebook
of ``K`` prototypes learned by k-means, and a row is stored as ``C`` indices
(its *codes*), one per subspace: the index of the nearest prototype.

The API follows nanopq (``PQ(M, Ks).fit(X).encode(X)``)::

    pq = ProductQuantizer(n_codebooks=8, n_prototypes=256, seed=0).fit(rows)
    codes = pq.encode(rows)          # (N, 8) uint8
    approx = pq.decode(codes)        # (N, D) float32

k-means here: seeded initialisation (k-means++, random distinct rows, or the
authors' "product" seeding), then Lloyd iterations with the distance work done
by the encoding kernel (distances fused with the argmin, no (N, K) matrix
in memory); an empty
cluster is re-seeded with the row farthest from its centroid.  The result is a
deterministic function of the data and the seed.
"""
import math
import warnings

import numpy as np

from .errors import ConfigError, ShapeError
from .kernels import pq_kernels as _k
from .kernels._jit import pick
from .progress import Progress
from .validate import N_PROTOTYPES_MAX, N_PROTOTYPES_MIN, as_choice, as_int, as_n_prototypes

#: Bounds on the number of prototypes per subspace (one definition, in validate).
K_MIN, K_MAX = N_PROTOTYPES_MIN, N_PROTOTYPES_MAX


#: k-means seedings ``ProductQuantizer(init=...)`` accepts.
INITS = ("auto", "k-means++", "random", "product")


def code_dtype(K):
    """Smallest unsigned dtype holding codes ``0..K-1``: uint8 up to 256, else uint16."""
    return np.dtype(np.uint8) if K <= 256 else np.dtype(np.uint16)


def subspace_length(D, C):
    """``Ds = ceil(D / C)``: columns per subspace (zero-padded when C does not divide D)."""
    return -(-int(D) // int(C))


def check_codes(codes, C, K, what="codes"):
    """``codes`` as an integer array (N, C) with every value in ``[0, K)``, else ShapeError.

    Called at every public entry point that indexes tables or codebooks with
    codes it did not compute itself, before any kernel sees them.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != C:
        raise ShapeError(f"{what}: expected shape (N, {C}), got {codes.shape}")
    if codes.dtype.kind not in "iu":
        raise ShapeError(f"{what}: expected an integer array, got dtype {codes.dtype}")
    if codes.size:
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >= K:
            raise ShapeError(f"{what}: values must be in [0, {K}) (K = {K} prototypes), "
                             f"found {lo if lo < 0 else hi}")
    return codes


def _as_rows(X, D=None, what="X"):
    X = np.asarray(X)
    if X.ndim != 2:
        raise ShapeError(f"{what}: expected a 2-d array (N, D), got shape {X.shape}")
    if X.dtype.kind not in "fiu":
        raise ShapeError(f"{what}: expected a numeric array, got dtype {X.dtype}")
    if D is not None and X.shape[1] != D:
        raise ShapeError(f"{what}: expected {D} columns, got {X.shape[1]}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.size and not np.isfinite(X).all():
        raise ShapeError(f"{what}: contains NaN or Inf")
    return X


class ProductQuantizer:
    """Product quantizer with ``n_codebooks`` subspaces of ``n_prototypes`` prototypes each.

    Parameters
    ----------
    n_codebooks : int
        ``C``, the number of subspaces (1 <= C <= D).
    n_prototypes : int
        ``K``, prototypes per subspace, 1..16384.  Capped (with a warning) when
        no subspace of the training rows has ``K`` distinct sub-rows.
    iters : int
        Maximum Lloyd iterations (stops earlier when at most 0.1% of the rows change cluster).
    init : {"auto", "k-means++", "random", "product"}
        Seeding.  ``k-means++``: D^2 sampling; ``random``: ``K`` distinct rows
        drawn at random; ``product`` (the authors'): k-means with
        ``ceil(sqrt(K))`` centroids on each half of the subspace, ``K`` of the
        Cartesian products drawn at random.  ``auto``: k-means++ for
        ``K <= 1024`` (its cost is ``K`` sequential passes), else random.
    seed : int
        Seed of every random choice (subspace ``c`` uses child ``c`` of
        ``numpy.random.SeedSequence(seed)``).
    name : str, optional
        Shown in warnings and on the progress bar (e.g. the layer name).
    progress : bool or None
        Progress over subspaces during ``fit`` (:class:`~tabconv_np.progress.Progress`:
        None, a bar on a terminal and heartbeat lines otherwise); default False.

    Attributes
    ----------
    prototypes : float32 array (C, K, Ds)
        Prototype ``k`` of subspace ``c`` is ``prototypes[c, k]``; columns past
        ``D`` in the last subspace(s) are zero.
    D, C, K, Ds : int
        Row length, subspaces, prototypes (after capping), subspace length.
    inertia : float
        Sum over subspaces of the squared distance of each training sub-row to
        its prototype, after the last iteration.
    n_iter : list of int
        Lloyd iterations run per subspace.
    """

    def __init__(self, n_codebooks=8, n_prototypes=256, iters=16, init="auto", seed=0, name=None,
                 progress=False):
        C = as_int(n_codebooks, "ProductQuantizer: n_codebooks", 1)
        K = as_n_prototypes(n_prototypes, "ProductQuantizer: n_prototypes")
        as_choice(init, "ProductQuantizer: init", INITS)
        iters = as_int(iters, "ProductQuantizer: iters", 0)
        self.C, self.K_requested, self.K = C, K, K
        self.iters, self.init, self.seed = int(iters), init, int(seed)
        self.name, self.progress = name, progress
        self.prototypes, self.D, self.Ds = None, None, None
        self.inertia, self.n_iter = None, []

    def __repr__(self):
        state = f"D={self.D}, Ds={self.Ds}" if self.prototypes is not None else "not fitted"
        return f"ProductQuantizer(C={self.C}, K={self.K}, {state})"

    @classmethod
    def from_prototypes(cls, prototypes, D):
        """A fitted quantizer from a ``(C, K, Ds)`` array (e.g. a table layer's prototypes)."""
        cb = np.ascontiguousarray(prototypes, dtype=np.float32)
        if cb.ndim != 3:
            raise ShapeError(f"prototypes: expected a (C, K, Ds) array, got shape {cb.shape}")
        C, K, Ds = cb.shape
        if not np.isfinite(cb).all():
            raise ShapeError("prototypes: contain NaN or Inf")
        if subspace_length(D, C) != Ds:
            raise ShapeError(f"prototypes: Ds = {Ds} does not match D = {D} split into C = {C} "
                             f"subspaces (ceil(D/C) = {subspace_length(D, C)})")
        pq = cls(C, as_n_prototypes(K, "prototypes: K"))
        pq.prototypes, pq.D, pq.Ds = cb, int(D), Ds
        return pq

    @property
    def code_dtype(self):
        """uint8 when ``K <= 256``, else uint16."""
        return code_dtype(self.K)

    # ------------------------------------------------------------ fitting
    def fit(self, X):
        """Learn the prototypes from training rows.

        Parameters
        ----------
        X : array (N, D)
            Training rows (cast to float32), N >= 2.

        Returns
        -------
        self
        """
        X = _as_rows(X, what="ProductQuantizer.fit: X")
        N, D = X.shape
        C = self.C
        if N < 2:
            raise ShapeError(f"ProductQuantizer.fit: need at least 2 rows, got {N}")
        if C > D:
            raise ConfigError(f"ProductQuantizer: n_codebooks C = {C} exceeds the row length D = {D}")
        Ds = subspace_length(D, C)
        Xp = np.pad(X, ((0, 0), (0, C * Ds - D))).reshape(N, C, Ds)   # zero-padded subspaces
        # K is capped at the largest number of distinct sub-rows of any subspace
        distinct = [_count_distinct(Xp[:, c]) for c in range(C)]
        K = min(self.K_requested, max(distinct))
        short = [c for c in range(C) if distinct[c] < self.K_requested]
        if short:
            who = f"layer {self.name}: " if self.name else ""
            what = (f"K capped at {K}" if K < self.K_requested else
                    "those subspaces keep every distinct sub-row as a prototype")
            warnings.warn(f"{who}{len(short)} of {C} subspaces have fewer distinct rows than "
                          f"K = {self.K_requested} (fewest: {min(distinct)} in subspace "
                          f"{int(np.argmin(distinct))}, of {N} training rows); {what}",
                          stacklevel=2)
        K = max(K, 1)
        seeds = np.random.SeedSequence(self.seed).spawn(C)
        cb = np.zeros((C, K, Ds), np.float32)
        self.n_iter, inertia = [], 0.0
        desc = f"k-means {self.name}" if self.name else "k-means"
        with Progress(C, desc, enabled=self.progress) as bar:
            for c in range(C):
                sub = np.ascontiguousarray(Xp[:, c])
                rng = np.random.default_rng(seeds[c])
                if distinct[c] <= K:
                    # every distinct sub-row becomes a prototype: exact in this subspace
                    uniq = np.unique(sub, axis=0)
                    cb[c, :len(uniq)] = uniq
                    cb[c, len(uniq):] = uniq[0]
                    self.n_iter.append(0)
                else:
                    cent, it, sse = kmeans(sub, K, self.iters, self._init_for(K), rng)
                    cb[c] = cent
                    self.n_iter.append(it)
                    inertia += sse
                bar.update()
        self.prototypes, self.D, self.Ds, self.K = cb, D, Ds, K
        self.inertia = float(inertia)
        return self

    def _init_for(self, K):
        if self.init != "auto":
            return self.init
        return "k-means++" if K <= 1024 else "random"

    # ----------------------------------------------------------- coding
    def _check_fitted(self):
        if self.prototypes is None:
            raise ConfigError("ProductQuantizer: call fit() first")

    def encode(self, X):
        """Codes of rows: nearest prototype in each subspace.

        Parameters
        ----------
        X : array (N, D)

        Returns
        -------
        codes : uint8 (K <= 256) or uint16 array (N, C)
            ``codes[n, c] = argmin_k ||X[n, subspace c] - prototypes[c, k]||^2``
            (first index on ties), i.e. the plain loop::

                for n in range(N):
                    for c in range(C):
                        codes[n, c] = ((prototypes[c] - xpad[n, c*Ds:(c+1)*Ds])**2).sum(1).argmin()
        """
        self._check_fitted()
        X = _as_rows(X, self.D, "ProductQuantizer.encode: X")
        return encode_rows(X, self.prototypes)

    def decode(self, codes):
        """Rows rebuilt from codes: ``approx[n, subspace c] = prototypes[c, codes[n, c]]``.

        Parameters
        ----------
        codes : integer array (N, C), values in [0, K)

        Returns
        -------
        float32 array (N, D)

        Raises
        ------
        ShapeError
            Wrong shape or dtype, or a code outside ``[0, K)``.
        """
        self._check_fitted()
        codes = check_codes(codes, self.C, self.K, "ProductQuantizer.decode: codes")
        # approx[n, c] = prototypes[c, codes[n, c]] for every (n, c)
        out = self.prototypes[np.arange(self.C)[None, :], codes.astype(np.intp)]   # (N, C, Ds)
        return np.ascontiguousarray(out.reshape(len(codes), -1)[:, :self.D])

    def quantization_error(self, X):
        """Mean squared error per row ``||x - decode(encode(x))||^2`` (float)."""
        X = _as_rows(X, self.D, "ProductQuantizer.quantization_error: X")
        if not len(X):
            return 0.0
        return float(((X - self.decode(self.encode(X))).astype(np.float64) ** 2).sum(1).mean())


#: k-means calls the encoding kernel many times on modest data: it threads a
#: call only above this many multiply-adds (a thread launch costs milliseconds
#: when the cores are shared with other work).
KMEANS_PARALLEL_MIN_WORK = 50_000_000


def encode_rows(X, prototypes, parallel_min_work=None):
    """Encode float32 C-contiguous rows ``X`` (N, D) with ``prototypes`` (C, K, Ds): no validation.

    The threaded kernel runs when the work (``N*K*C*Ds`` multiply-adds) is
    at least ``parallel_min_work`` (default: the package-wide threshold of
    :meth:`tabconv_np.kernels._jit.Kernel.pick`).
    """
    C, K, Ds = prototypes.shape
    out = np.empty((X.shape[0], C), code_dtype(K))
    if X.shape[0]:
        work = X.shape[0] * K * C * Ds
        if parallel_min_work is not None and work < parallel_min_work:
            fn = _k.encode.serial
        else:
            fn = pick(_k.encode, work)
        fn(X, prototypes, out)
    return out


# ------------------------------------------------------------------ k-means
def _count_distinct(sub):
    """Number of distinct rows of a 2-d float32 array."""
    v = np.ascontiguousarray(sub).view(np.dtype((np.void, sub.dtype.itemsize * sub.shape[1])))
    return len(np.unique(v.ravel()))


def assign(X, cent):
    """Nearest centroid of each row (the encoding kernel with one subspace).

    Parameters
    ----------
    X : float32 C-contiguous array (N, d)
    cent : float32 array (K, d)

    Returns
    -------
    labels : int64 array (N,)
        ``argmin_k ||X[n] - cent[k]||^2`` (first on ties; computed as
        ``argmin_k 0.5*||c_k||^2 - x.c_k`` without materialising the (N, K)
        distance matrix).
    dist : float32 array (N,)
        Squared distance of each row to its centroid.
    """
    cb = np.ascontiguousarray(cent, dtype=np.float32)[None]
    labels = encode_rows(X, cb, KMEANS_PARALLEL_MIN_WORK)[:, 0].astype(np.int64)
    diff = X - cent[labels]
    # dist[n] = sum_d (X[n, d] - cent[labels[n], d])**2
    dist = np.einsum("nd,nd->n", diff, diff)
    return labels, dist


def _kmeanspp(X, K, rng, x2):
    """k-means++ seeding: each new centre drawn with probability proportional to D(x)^2.

    The draws come from ``rng``; the sequential sampling runs in a kernel
    (:func:`tabconv_np.kernels.pq_kernels._kmeanspp`).
    """
    N = len(X)
    first = int(rng.integers(N))
    u = rng.random(K)
    idx = np.empty(K, np.int64)
    _k.kmeanspp.serial(X, x2, first, u, idx)
    return X[idx].copy()


def _random_distinct(X, K, rng):
    """``K`` distinct rows of X drawn at random (X has at least K distinct rows)."""
    uniq = np.unique(X, axis=0)
    return uniq[np.sort(rng.choice(len(uniq), K, replace=False))].copy()


def _product_init(X, K, rng, iters):
    """The authors' seeding: k-means(ceil(sqrt(K))) on each half, K of the Cartesian products."""
    d = X.shape[1]
    if d < 2:
        return _random_distinct(X, K, rng)
    h = d // 2
    k2 = int(math.ceil(math.sqrt(K)))
    halves = []
    for part in (X[:, :h], X[:, h:]):
        part = np.ascontiguousarray(part)
        kk = min(k2, _count_distinct(part))
        c, _, _ = kmeans(part, kk, iters, "k-means++" if kk > 1 else "random", rng)
        halves.append(c)
    a, b = halves
    pairs = rng.choice(len(a) * len(b), min(K, len(a) * len(b)), replace=False)
    cent = np.concatenate([a[pairs // len(b)], b[pairs % len(b)]], axis=1)
    if len(cent) < K:                         # too few products: top up with random rows
        extra = X[rng.choice(len(X), K - len(cent), replace=False)]
        cent = np.concatenate([cent, extra])
    return np.ascontiguousarray(cent, dtype=np.float32)


def kmeans(X, K, iters=16, init="k-means++", rng=None, tol=1e-3):
    """Lloyd's k-means on float32 rows.

    Parameters
    ----------
    X : float32 array (N, d), with at least K distinct rows
    K : int
    iters : int
        Maximum Lloyd iterations.
    init : {"k-means++", "random", "product"}
    rng : numpy.random.Generator
    tol : float
        Stop when at most this fraction of the rows changed cluster in an
        iteration (0: only when none did).

    Returns
    -------
    centroids : float32 array (K, d)
    n_iter : int
    sse : float
        Sum of squared distances of the rows to their centroids.

    Notes
    -----
    An empty cluster takes the row farthest from its centroid among the rows
    not already re-seeding another one; centroids are means computed in
    float64 (:func:`tabconv_np.kernels.pq_kernels._centroid_sums`).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    X = np.ascontiguousarray(X, dtype=np.float32)
    N = len(X)
    x2 = np.einsum("nd,nd->n", X, X)
    if init == "k-means++":
        cent = _kmeanspp(X, K, rng, x2)
    elif init == "random":
        cent = _random_distinct(X, K, rng)
    else:
        cent = _product_init(X, K, rng, iters)
    labels, dist = assign(X, cent)
    sums = np.empty((K, X.shape[1]), np.float64)
    counts = np.empty(K, np.int64)
    it = 0
    for it in range(1, iters + 1):
        # centroid k = mean of its rows:  for n: sums[labels[n]] += X[n]; counts[labels[n]] += 1
        _k.centroid_sums.serial(X, labels, sums, counts)
        used = counts > 0
        new = cent.copy()
        new[used] = (sums[used] / counts[used, None]).astype(np.float32)
        empty = np.flatnonzero(~used)
        if len(empty):
            far = np.argsort(-dist, kind="stable")[:len(empty)]
            new[empty] = X[far]
        cent = new
        old = labels
        labels, dist = assign(X, cent)
        if not len(empty) and np.count_nonzero(old != labels) <= tol * N:
            break
    return cent, it, float(dist.sum(dtype=np.float64))
