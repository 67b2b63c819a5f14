"""Table-lookup layers (TabConv): ``TableConv2d`` and ``TableLinear``.

A table layer replaces the matrix product of an exact layer by product
quantization (:mod:`tabconv_np.pq`) and table lookups:

1. lower the input to rows (``im2col`` for a convolution: one row of
   ``D = C_in*kh*kw`` numbers per output position, columns in (C, kh, kw)
   order; the input itself for a linear layer);
2. encode each row: in each of ``C`` subspaces, the index of the nearest of
   ``K`` prototypes (``N*K*C*Ds`` multiply-adds, ``Ds = ceil(D/C)``);
3. ``y[n, m] = sum_c table[c, code[n, c], m] + bias[m]`` where
   ``table[c, k, m] = <prototypes[c, k], weight column m restricted to
   subspace c>`` was computed once, offline (``N*M*C`` lookups,
   ``N*M*(C-1)`` adds).

Sizes are integers named ``n_codebooks`` (``C``) and ``n_prototypes``
(``K``); ``prototypes`` and ``table`` are arrays.  Input channels are
``C_in`` (never ``C``, which counts codebooks here).

Parameters (saved and loaded by :mod:`tabconv_np.io` like any other):
``prototypes`` (C, K, Ds) float32, ``table`` (C, K, M) float32 and
``bias`` (M,) float32.  Batch norm is folded into the weights before the
table is built (a table row is linear in the weights, so folding is exact).

Both layers have the same ``forward(x, layout)`` as ``Conv2d`` / ``Linear``
and can stand anywhere those do.  Their costs (``cost``) fill the
``encode_macs``, ``encode_cmps``, ``lookups`` and ``lookup_adds`` fields of
:mod:`tabconv_np.ops`:

* ``encode_macs = rows*K*C*Ds`` (``= rows*K*D`` when C divides D; the padded
  columns of the last subspace are counted because they are computed), one
  multiply-add per dimension and prototype (the score is
  ``0.5*||p||^2 - <x, p>``, whose ``0.5*||p||^2`` a deployment stores; this
  kernel recomputes it once per 64 rows, about ``1/64`` more, not counted);
* ``encode_cmps = rows*C*(K-1)`` (the argmin);
* ``lookups = rows*M*C`` table reads, ``lookup_adds = rows*M*(C-1)`` adds,
  ``bias_adds = rows*M``;
* offline, once: ``macs = C*K*Ds*M`` to build the table from the prototypes
  and the weights.

The im2col lowering is a copy, not arithmetic, for table and exact layers alike.
"""
import numpy as np

from .errors import ConfigError, ShapeError
from .geometry import attach_geometry, from_rows
from .kernels import pq_kernels as _k
from .kernels._jit import pick
from .layers import LinearShape
from .module import Module
from .pq import check_codes, code_dtype, encode_rows, subspace_length
from .validate import as_int, as_n_codebooks, as_n_prototypes, check_parameters

__all__ = ["TableConv2d", "TableLinear", "warmup", "table_from_weights", "fit_tables"]


def table_from_weights(prototypes, wmat):
    """Tables ``T[c, k, m] = <prototypes[c, k], wmat[subspace c, m]>``.

    Parameters
    ----------
    prototypes : float32 array (C, K, Ds)
    wmat : array (D, M)
        The layer's weights as a matrix: ``weight.reshape(M, D).T`` for a conv
        (OIHW weight), ``weight.T`` for a linear layer.

    Returns
    -------
    float32 array (C, K, M)
    """
    P = np.ascontiguousarray(prototypes, dtype=np.float32)
    W = np.ascontiguousarray(wmat, dtype=np.float32)
    C, K, Ds = P.shape
    if W.ndim != 2 or subspace_length(W.shape[0], C) != Ds:
        raise ShapeError(f"table_from_weights: weight matrix {W.shape} does not fit prototypes "
                         f"{P.shape} (need D rows with ceil(D/C) = Ds)")
    out = np.empty((C, K, W.shape[1]), np.float32)
    pick(_k.build_table, C * K * Ds * W.shape[1])(P, W, out)
    return out


def fit_tables(codes, targets, tables, ridge=1.0, sweeps=3, relu=False, shift=None):
    """Least-squares refinement of tables to given codes and target outputs.

    Minimises ``sum_n ||sum_c T[c, codes[n, c]] - targets[n]||^2
    + ridge * sum_{c,k} ||T[c, k] - tables[c, k]||^2`` by exact block
    coordinate descent over the codebooks: with the other codebooks fixed,
    entry ``T[c, k]`` is the ridge-shrunk mean residual of the rows coded
    ``k`` in subspace ``c`` (one-hot codes of one codebook are orthogonal).
    The plain loop::

        for sweep in range(sweeps):
            for c in range(C):
                r = targets - (pred - T[c, codes[:, c]])     # residual without codebook c
                for k in range(K):
                    rows = codes[:, c] == k
                    T[c, k] = (r[rows].sum(0) + ridge * tables[c, k]) / (rows.sum() + ridge)
                pred = ... with the new T[c]

    This goes beyond plain PQ (the TabConv authors build tables from the
    prototypes only); it is what lets a table layer correct the error of the
    layers before it when ``targets`` are the exact network's outputs.

    Parameters
    ----------
    codes : integer array (N, C), values < K
    targets : float32 array (N, M)
        Desired outputs minus the bias.
    tables : float32 array (C, K, M)
        Starting point and ridge anchor (the prototype tables).
    ridge : float
        Shrinkage toward ``tables``, in rows: an entry seen by ``n`` rows moves
        ``n / (n + ridge)`` of the way to its least-squares value.
    sweeps : int
    relu : bool
        The output goes through a ReLU after ``shift`` is added: errors where
        both ``pred + shift`` and ``targets + shift`` are <= 0 cost nothing
        (their residual is taken as 0 in each update).
    shift : None, float32 array (M,) or (N, M)
        Added to predictions and targets before the ReLU (e.g. the bias and
        the shortcut a block adds); 0 when None.

    Returns
    -------
    float32 array (C, K, M)
    """
    codes = np.asarray(codes)
    Y = np.ascontiguousarray(targets, dtype=np.float32)
    T0 = np.asarray(tables, np.float32)
    C, K, M = T0.shape
    T = T0.copy()
    cols = [np.ascontiguousarray(codes[:, c], dtype=np.int64) for c in range(C)]
    pred = np.zeros_like(Y)
    for c in range(C):
        pred += T[c][cols[c]]
    sums = np.empty((K, M), np.float64)
    counts = np.empty(K, np.int64)
    dead = None
    if relu:
        dead = (Y + shift <= 0) if shift is not None else (Y <= 0)   # target clipped by the ReLU
    for _ in range(sweeps):
        for c in range(C):
            old = T[c][cols[c]]
            resid = Y - pred
            if dead is not None:
                # no loss where target and prediction are both clipped by the ReLU
                resid[dead & ((pred + shift <= 0) if shift is not None else (pred <= 0))] = 0
            resid += old
            _k.centroid_sums.serial(resid, cols[c], sums, counts)
            T[c] = ((sums + ridge * T0[c]) / (counts + ridge)[:, None]).astype(np.float32)
            pred += T[c][cols[c]]
            pred -= old
    return T


class _TableMixin:
    """What both table layers share: parameters, encoding, lookup, op counts."""

    def _init_tables(self, D, M, n_codebooks, n_prototypes, bias):
        who = type(self).__name__
        self.D, self.M = as_int(D, f"{who}: in_features", 1), as_int(M, f"{who}: out_features", 1)
        self.n_codebooks = as_n_codebooks(n_codebooks, D, f"{who}: n_codebooks")
        self.n_prototypes = as_n_prototypes(n_prototypes, f"{who}: n_prototypes")
        self.Ds = subspace_length(D, self.n_codebooks)
        C, K = self.n_codebooks, self.n_prototypes
        check_parameters(C * K * (self.Ds + self.M) + self.M, who)
        self.params["prototypes"] = np.zeros((C, K, self.Ds), np.float32)
        self.params["table"] = np.zeros((C, K, self.M), np.float32)
        if bias:
            self.params["bias"] = np.zeros(self.M, np.float32)

    @staticmethod
    def _sizes(cfg):
        """``(n_codebooks, n_prototypes)`` of a config; files written before the rename say
        ``codebooks`` / ``prototypes``."""
        return (cfg.get("n_codebooks", cfg.get("codebooks", 8)),
                cfg.get("n_prototypes", cfg.get("prototypes", 256)))

    # -- building --------------------------------------------------------
    def set_tables(self, prototypes, wmat, bias=None):
        """Fill ``prototypes``, ``table`` (built from ``wmat`` (D, M)) and ``bias``."""
        P = np.asarray(prototypes, np.float32)
        if P.shape != self.params["prototypes"].shape:
            raise ShapeError(f"{type(self).__name__}: prototypes of shape {P.shape}, expected "
                             f"{self.params['prototypes'].shape}")
        if np.shape(wmat) != (self.D, self.M):
            raise ShapeError(f"{type(self).__name__}: weight matrix of shape {np.shape(wmat)}, "
                             f"expected {(self.D, self.M)}")
        if not np.isfinite(P).all():
            raise ShapeError(f"{type(self).__name__}: the prototypes contain NaN or Inf")
        self.params["prototypes"][...] = P
        self.params["table"][...] = table_from_weights(P, wmat)
        if "bias" in self.params:
            self.params["bias"][...] = 0 if bias is None else bias
        return self

    # -- computing ---------------------------------------------------------
    def encode(self, rows):
        """Codes ``(N, C)`` (uint8 when K <= 256, else uint16) of float32 rows ``(N, D)``."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.D:
            raise ShapeError(f"{type(self).__name__}.encode: expected rows (N, {self.D}), "
                             f"got {rows.shape}")
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if not np.isfinite(rows).all():
            raise ShapeError(f"{type(self).__name__}.encode: the rows contain NaN or Inf")
        return encode_rows(rows, self.params["prototypes"])

    def lookup(self, codes):
        """``y[n, m] = sum_c table[c, codes[n, c], m] + bias[m]`` as float32 ``(N, M)``.

        Raises
        ------
        ShapeError
            ``codes`` is not an integer ``(N, C)`` array with values in ``[0, K)``.
        """
        codes = check_codes(codes, self.n_codebooks, self.n_prototypes,
                            f"{type(self).__name__}.lookup: codes")
        if codes.dtype != code_dtype(self.n_prototypes):
            codes = codes.astype(code_dtype(self.n_prototypes))
        return self.lookup_trusted(np.ascontiguousarray(codes))

    def lookup_trusted(self, codes):
        """Lookup-accumulate on codes known to be in range (from :meth:`encode`): no check."""
        T = self.params["table"]
        bias = self.params.get("bias")
        out = np.empty((codes.shape[0], self.M), np.float32)
        if codes.shape[0]:
            fn = pick(_k.lookup, codes.shape[0] * self.M * self.n_codebooks)
            fn(codes, T, bias if bias is not None else _EMPTY, bias is not None, out)
        return out

    def _rows_forward(self, rows):
        """Outputs of float rows; a row holding NaN or Inf gives a NaN output row, as the
        exact layer's output is NaN or infinite there (never a code chosen for garbage)."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        P = self.params["prototypes"]
        if np.isfinite(rows).all():
            return self.lookup_trusted(encode_rows(rows, P))
        bad = ~np.isfinite(rows).all(1)
        out = self.lookup_trusted(encode_rows(np.where(bad[:, None], np.float32(0), rows), P))
        out[bad] = np.nan
        return out

    def table_cost(self, n_rows):
        """Cost of ``n_rows`` encoded rows (one image's worth in ``cost``), offline table building apart."""
        C, K, Ds, M = self.n_codebooks, self.n_prototypes, self.Ds, self.M
        return dict(encode_macs=n_rows * K * C * Ds, encode_cmps=n_rows * C * (K - 1),
                    lookups=n_rows * M * C, lookup_adds=n_rows * M * (C - 1),
                    bias_adds=n_rows * M if "bias" in self.params else 0,
                    offline={"macs": C * K * Ds * M})


_EMPTY = np.zeros(0, np.float32)


class TableConv2d(_TableMixin, Module):
    """Convolution computed by table lookups (interchangeable with :class:`~tabconv_np.layers.Conv2d`).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, dilation :
        As in ``Conv2d`` (groups are not supported).
    n_codebooks : int
        ``C``, subspaces of the ``D = in_channels*kh*kw`` row.
    n_prototypes : int
        ``K``, prototypes per subspace.
    bias : bool

    Parameters (``params``): ``prototypes`` (C, K, Ds), ``table`` (C, K, out_channels),
    ``bias`` (out_channels,).

    Op counts per output position: ``K*C*Ds`` encoding multiply-adds,
    ``C*(K-1)`` comparisons, ``C*M`` lookups and ``(C-1)*M`` adds (+ ``M``
    bias adds), ``M = out_channels``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 n_codebooks=8, n_prototypes=256, bias=True):
        Module.__init__(self)
        g = attach_geometry(self, "TableConv2d", in_channels, out_channels, kernel_size, stride,
                            padding, dilation)
        self._init_tables(g.D, g.C_out, n_codebooks, n_prototypes, bias)

    @classmethod
    def from_config(cls, cfg, build):
        C, K = cls._sizes(cfg)
        try:
            return cls(cfg["in_channels"], cfg["out_channels"], cfg["kernel_size"], cfg.get("stride", 1),
                       cfg.get("padding", 0), cfg.get("dilation", 1), C, K, cfg.get("bias", True))
        except KeyError as e:
            raise ConfigError(f"TableConv2d: config lacks {e}") from None

    @classmethod
    def from_conv(cls, conv, prototypes):
        """The table version of ``conv`` (a ``Conv2d``, BN already folded) with the given
        prototypes ``(C, K, Ds)``; the table is built from ``conv``'s weights."""
        if conv.groups != 1:
            raise ConfigError(f"TableConv2d: grouped convolutions (groups={conv.groups}) are not supported")
        P = np.asarray(prototypes, np.float32)
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, n_codebooks=P.shape[0], n_prototypes=P.shape[1],
                    bias="bias" in conv.params)
        w = conv.params["weight"]
        return layer.set_tables(P, w.reshape(w.shape[0], -1).T, conv.params.get("bias"))

    def config(self):
        return {"type": "TableConv2d", **self.geometry.config(), "n_codebooks": self.n_codebooks,
                "n_prototypes": self.n_prototypes, "bias": "bias" in self.params}

    def lower(self, x, layout="NCHW"):
        """im2col rows ``(N*Ho*Wo, D)`` of a batch and ``(N, Ho, Wo)``."""
        self.geometry.check_batch(x, layout, "TableConv2d")
        return self.geometry.lower(x, layout)

    def forward(self, x, layout):
        rows, (N, Ho, Wo) = self.lower(x, layout)
        return from_rows(self._rows_forward(rows), N, Ho, Wo, layout)

    def out_shape(self, in_shape):
        return self.geometry.out_shape(in_shape, "TableConv2d")

    def cost(self, in_shape):
        out = self.out_shape(in_shape)
        return dict(self.table_cost(out[1] * out[2]), im2col_bytes=self.geometry.workspace_bytes(in_shape)["im2col"])


class TableLinear(_TableMixin, LinearShape, Module):
    """Linear layer computed by table lookups (interchangeable with :class:`~tabconv_np.layers.Linear`).

    Parameters
    ----------
    in_features, out_features : int
    n_codebooks, n_prototypes : int
        ``C`` subspaces of the ``D = in_features`` input, ``K`` prototypes each.
    bias : bool
    """

    def __init__(self, in_features, out_features, n_codebooks=8, n_prototypes=256, bias=True):
        Module.__init__(self)
        self._init_tables(in_features, out_features, n_codebooks, n_prototypes, bias)
        self.in_features, self.out_features = self.D, self.M

    @classmethod
    def from_config(cls, cfg, build):
        C, K = cls._sizes(cfg)
        try:
            return cls(cfg["in_features"], cfg["out_features"], C, K, cfg.get("bias", True))
        except KeyError as e:
            raise ConfigError(f"TableLinear: config lacks {e}") from None

    @classmethod
    def from_linear(cls, linear, prototypes):
        """The table version of ``linear`` with the given prototypes ``(C, K, Ds)``."""
        P = np.asarray(prototypes, np.float32)
        layer = cls(linear.in_features, linear.out_features, n_codebooks=P.shape[0],
                    n_prototypes=P.shape[1], bias="bias" in linear.params)
        return layer.set_tables(P, linear.params["weight"].T, linear.params.get("bias"))

    def config(self):
        return {"type": "TableLinear", "in_features": self.in_features,
                "out_features": self.out_features, "n_codebooks": self.n_codebooks,
                "n_prototypes": self.n_prototypes, "bias": "bias" in self.params}

    def forward(self, x, layout):
        self.check_batch(x)
        return self._rows_forward(x)

    def cost(self, in_shape):
        self.out_shape(in_shape)
        return self.table_cost(1)


def warmup():
    """Compile (or load from the on-disk cache) every table kernel, serial and parallel,
    for both code dtypes (uint8 for K <= 256, uint16 above), and the serial k-means kernels."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 10)).astype(np.float32)
    P = rng.standard_normal((3, 4, 4)).astype(np.float32)
    W = rng.standard_normal((10, 5)).astype(np.float32)
    T = np.empty((3, 4, 5), np.float32)
    y = np.empty((3, 5), np.float32)
    b = np.zeros(5, np.float32)
    _k.kmeanspp.serial(X, np.einsum("nd,nd->n", X, X), 0, np.zeros(2), np.empty(2, np.int64))
    _k.centroid_sums.serial(X, np.zeros(3, np.int64), np.empty((2, 10)), np.empty(2, np.int64))
    for build, encode, lookup in zip(_k.build_table, _k.encode, _k.lookup):  # parallel, serial
        build(P, W, T)
        for dt in (np.uint8, np.uint16):
            codes = np.empty((3, 3), dt)
            encode(X, P, codes)
            lookup(codes, T, b, True, y)
    return True
