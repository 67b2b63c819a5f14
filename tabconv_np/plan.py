"""Prepared inference: a network compiled once, for its image shape, into NHWC steps.

``prepare(net)`` returns a :class:`Plan`: the forward pass with the work that
does not depend on the data done once, when the plan is made:

* batch norm folded into the convolutions before it (``fold_batchnorm``);
* NHWC inside, converted once at the plan's edge;
* every convolution with ``groups == 1`` a :class:`PreparedConv`: its weight
  permuted once into the ``(kh*kw*C, C_out)`` matrix the lowering multiplies
  with, the taps that only ever read padding at this image size dropped (a
  3x3 convolution of a 1x1 map is a 1x1 convolution: 1/9 of the weight is
  read), and an epilogue that adds the bias, a residual block's shortcut and
  applies a following ReLU / ReLU6 / Clip in one pass after the product;
  with ``prepare(net, batch=B)`` each 3x3 stride-1 convolution is timed with
  im2col and Winograd F(2x2, 3x3) / F(4x4, 3x3) (filters transformed once)
  on a batch of B and keeps the fastest;
* every other layer (pooling, linear, table layers, ...) runs its own NHWC
  forward.

The contract:

* A plan is a snapshot.  It copies what it needs when it is made, so later
  changes to the network (parameters written, layers replaced) are not seen
  by it: prepare again.  ``net(x)`` never caches and is always current, unless
  the plan was attached to it (``prepare(net, attach=True)``: ``net.plan``).
* ``plan(x)`` takes what ``net(x)`` takes (a preprocessed float batch of the
  network's image shape, any batch size, NCHW or NHWC; uint8 images 0-255,
  normalised as ``net.predict`` does) and returns the same values within
  float32 rounding (the products are summed in another order).
"""
import copy

import numpy as np

import time

from .conv.chunks import images_per_chunk
from .conv.winograd import conv2d_winograd, filter_transform
from .errors import ConfigError, ShapeError
from .functional import WINOGRAD_TILES, winograd_applies
from .fold import fold_batchnorm
from .geometry import conv_output_size
from .kernels.epilogue_kernels import bias_residual_clamp
from .kernels.im2col_kernels import lower_gijc
from .kernels import tree_kernels as _tree
from .layers import Clip, Conv2d, ReLU
from .lcnn import LCNNConv2d
from .network import normalize
from .structure import Chain, Residual, structure_of
from .threads import get_num_threads
from .tree_tables import DEPTH, LOOKUPS_PER_WORK, TreeConv2d

_F32 = np.float32
_NO_RESIDUAL = np.zeros((1, 1), _F32)
#: Clamp bounds of the activations a residual block names.
_ACTS = {"relu": (0.0, np.inf), None: (-np.inf, np.inf)}


def live_taps(size, out_size, k, stride, pad, dilation):
    """The range ``[t0, t1)`` of kernel taps that read the input for some output position.

    Tap ``t`` of output ``o`` reads input ``o*stride - pad + t*dilation``;
    taps outside the range read only padding (zeros) at this input size, so
    dropping them changes no output.  ``(0, 1)`` when no tap reads the input.
    """
    live = [t for t in range(k)
            if any(0 <= o * stride - pad + t * dilation < size for o in range(out_size))]
    return (live[0], live[-1] + 1) if live else (0, 1)


class _Prepared:
    """What prepared steps share: the epilogue's clamp, set by the plan once it knows what follows
    (a residual block's activation is given to the last step of its main branch)."""

    #: ``(lo, hi)`` float32 clamp bounds of the epilogue.
    act = (_F32(-np.inf), _F32(np.inf))

    def _epilogue(self, y, bias, residual):
        """``y = clamp(y + bias + residual)`` in place; y (R, M)."""
        res = _NO_RESIDUAL if residual is None else residual.reshape(y.shape)
        bias_residual_clamp.pick(y.size)(y, bias, res, residual is not None, *self.act)


class PreparedConv(_Prepared):
    """A convolution (groups 1) prepared for NHWC input of one spatial size, epilogue fused.

    Parameters
    ----------
    weight : float32 array (C_out, C, kh, kw)
    bias : float32 array (C_out,) or None
    stride, dilation : (int, int)
    padding : (top, bottom, left, right)
    in_shape : (C, H, W)
        Shape of one input image.
    act : (float, float)
        Clamp bounds ``(lo, hi)`` of the epilogue: ``(0, inf)`` is ReLU,
        ``(-inf, inf)`` none.

    Notes
    -----
    ``y = clamp(lower(x) @ wmat + bias [+ residual], lo, hi)`` with
    ``wmat[(i*kw + j)*C + c, o] = weight[o, c, i0 + i, j0 + j]`` over the live
    taps ``[i0, i1) x [j0, j1)`` (:func:`live_taps`); the lowering
    (``lower_gijc``) is told the top/left padding shifted by the dropped
    taps, ``pad - i0*dilation``.  An unpadded 1x1 convolution reads the input
    (subsampled for stride > 1) as its own rows.
    """

    def __init__(self, weight, bias, stride, padding, dilation, in_shape, act=(-np.inf, np.inf),
                 method="im2col"):
        C_out, C, kh, kw = weight.shape
        _, H, W = in_shape
        (sh, sw), (dh, dw), (pt, _, pl, _) = stride, dilation, padding
        Ho, Wo = conv_output_size((H, W), (kh, kw), stride, padding, dilation)
        i0, i1 = live_taps(H, Ho, kh, sh, pt, dh)
        j0, j1 = live_taps(W, Wo, kw, sw, pl, dw)
        self.in_shape, self.out_shape = tuple(in_shape), (C_out, Ho, Wo)
        self.kernel = (i1 - i0, j1 - j0)
        self.args = (1, i1 - i0, j1 - j0, sh, sw, pt - i0 * dh, pl - j0 * dw, dh, dw, Ho, Wo)
        w = weight[:, :, i0:i1, j0:j1]
        self.wmat = np.ascontiguousarray(w.transpose(2, 3, 1, 0), _F32).reshape(-1, C_out)
        self.bias = np.zeros(C_out, _F32) if bias is None else np.array(bias, _F32)
        self.act = (_F32(act[0]), _F32(act[1]))
        self.stride = (sh, sw)
        self.pointwise = (self.kernel == (1, 1) and self.args[5:7] == (0, 0)
                          and (Ho - 1) * sh < H and (Wo - 1) * sw < W)
        self.method = method
        if method != "im2col":
            if method not in WINOGRAD_TILES or not winograd_applies(self.kernel, stride, dilation):
                raise ConfigError(f"PreparedConv: method {method!r} does not apply to kernel "
                                  f"{self.kernel}, stride {stride}, dilation {dilation}")
            # on the live taps, with the top/left padding shifted by the dropped ones (>= 0 here)
            self.U = filter_transform(np.asarray(w, _F32), WINOGRAD_TILES[method])
            self.padding = (self.args[5], 0, self.args[6], 0)

    @classmethod
    def from_layer(cls, conv, in_shape, act=(-np.inf, np.inf), tune_batch=None, scratch=None):
        """:class:`PreparedConv` of a :class:`~tabconv_np.layers.Conv2d` (groups 1).

        ``tune_batch``: an int times im2col and both Winograd forms (where they
        apply) on a random batch of that size and keeps the fastest; None: im2col.
        ``scratch``: the cache-flushing array the timing writes (made here if None).
        """
        args = (conv.params["weight"], conv.params.get("bias"), conv.stride,
                conv.geometry.padding, conv.dilation, in_shape, act)
        best = cls(*args)
        if tune_batch is None or not winograd_applies(best.kernel, conv.stride, conv.dilation):
            return best
        C, H, W = in_shape
        x = np.random.default_rng(0).standard_normal((tune_batch, H, W, C)).astype(_F32)
        if scratch is None:
            scratch = np.empty(EVICT_BYTES // 4, _F32)
        timed = [(_seconds(p, x, scratch), p) for p in [best] + [cls(*args, method=m) for m in WINOGRAD_TILES]]
        return min(timed, key=lambda tp: tp[0])[1]

    def __call__(self, x, residual=None):
        """``clamp(conv(x) + bias + residual)``; x (N, H, W, C) float32 C-contiguous,
        residual None or (N, Ho, Wo, C_out); returns (N, Ho, Wo, C_out)."""
        N = x.shape[0]
        C_out, Ho, Wo = self.out_shape
        P = Ho * Wo
        if self.method != "im2col" and N:
            out = conv2d_winograd(x, None, None, (1, 1), self.padding, (1, 1), 1, "NHWC", (Ho, Wo),
                                  m=WINOGRAD_TILES[self.method], U=self.U)
            self._epilogue(out.reshape(N * P, C_out), self.bias, residual)
            return out
        out = np.empty((N, Ho, Wo, C_out), _F32)
        y = out.reshape(N * P, C_out)
        if N == 0:
            return out
        if self.pointwise:
            sh, sw = self.stride
            if (sh, sw) != (1, 1) or (Ho, Wo) != x.shape[1:3]:
                x = np.ascontiguousarray(x[:, :Ho * sh:sh, :Wo * sw:sw])
            np.matmul(x.reshape(N * P, -1), self.wmat, out=y)
        else:
            K = self.wmat.shape[0]
            nb = images_per_chunk(N, P * K * 4, P)
            rows = np.empty((min(nb, N) * P, K), _F32)
            for n0 in range(0, N, nb):
                n1 = min(N, n0 + nb)
                r = rows[:(n1 - n0) * P]
                lower_gijc.pick(r.size)(x[n0:n1], *self.args, r)
                np.matmul(r, self.wmat, out=y[n0 * P:n1 * P])
        self._epilogue(y, self.bias, residual)
        return out


class PreparedTree(_Prepared):
    """A hash-tree convolution (:class:`~tabconv_np.tree_tables.TreeConv2d`) prepared for NHWC
    input of one spatial size: offsets computed once, clamp and residual sum after the lookup.

    Parameters
    ----------
    layer : TreeConv2d
    in_shape : (C, H, W)
    act : (float, float)
        Clamp bounds of the epilogue, as in :class:`PreparedConv`.
    """

    def __init__(self, layer, in_shape, act=(-np.inf, np.inf)):
        C, H, W = in_shape
        self.layer = layer
        self.in_shape, self.out_shape = tuple(in_shape), tuple(layer.out_shape(in_shape))
        x = np.zeros((1, H, W, C), _F32)
        args, _ = layer.encoder_args(x, "NHWC")     # checks split_cols; offsets for this shape
        self.off, self.s_row, self.s_col = args[1], args[4], args[5]
        self.pads = layer.geometry.padding
        p = layer.params
        self.thr, self.table, self.step, self.bias = (p[k].copy() for k in ("thresholds", "table", "step", "bias"))
        self.zero = np.zeros_like(self.bias)
        self.act = (_F32(act[0]), _F32(act[1]))
        self.method = "tree"

    def __call__(self, x, residual=None):
        """``clamp(tree_conv(x) + residual)``; x (N, H, W, C), residual None or (N, Ho, Wo, M)."""
        N = x.shape[0]
        M, Ho, Wo = self.out_shape
        if N == 0 or not np.isfinite(x).all():     # NaN/Inf: the layer's own path marks them
            y = self.layer.forward(x, "NHWC")
            self._epilogue(y.reshape(-1, M), self.zero, residual)
            return y
        C, H, W = self.in_shape
        pt, pb, pl, pr = self.pads
        if pt or pb or pl or pr:
            xp = np.zeros((N, H + pt + pb, W + pl + pr, C), _F32)
            xp[:, pt:pt + H, pl:pl + W] = x
            x = xp
        R, C = N * Ho * Wo, len(self.off)
        y = np.empty((R, M), _F32)
        res = _NO_RESIDUAL if residual is None else residual.reshape(R, M)
        work = R * C * DEPTH + R * M * C // LOOKUPS_PER_WORK
        blk = max(1, min(_tree.BLOCK, R // (4 * get_num_threads())))     # >= 4 tasks a thread
        _tree.encode_lookup.pick(work)(x.reshape(-1), self.off, self.thr, x[0].size, self.s_row, self.s_col,
                                       Ho, Wo, self.table, self.step, self.bias, res, residual is not None,
                                       *self.act, blk, y)
        return y.reshape(N, Ho, Wo, M)


#: Bytes written between timed calls while tuning, to push the layer's weights
#: out of the caches (larger than the L3 of the boards and servers measured):
#: in a network the other layers' weights have evicted them too, and a method
#: with larger prepared weights (Winograd's transformed filters) pays for it.
EVICT_BYTES = 64 << 20


class PreparedLCNN(_Prepared):
    """An :class:`~tabconv_np.lcnn.LCNNConv2d` as two prepared convolutions, epilogue fused:
    the dictionary stage (1x1, ``C_in -> k``) and the lookup stage as a dense convolution of the
    ``k`` maps with the layer's filters over them (``LCNNConv2d.map_filters``, mostly zeros).

    The same sums as the lookup kernel, plus products by zero: ``k*kh*kw`` multiply-adds per
    output where the lookups do ``s*kh*kw`` (the layer's op count is of the lookups).  BLAS runs
    them faster than the lookup kernel gathers: measured 2.9x at batch 32 and 1.2x at batch 1
    over the 20 LCNN layers of ResNet-18 "paper" (k = 32, s = 2; 1 thread).

    Parameters
    ----------
    layer : LCNNConv2d
    in_shape : (C, H, W)
    act : (float, float)
        Clamp bounds of the epilogue, as in :class:`PreparedConv`.
    """

    def __init__(self, layer, in_shape, act=(-np.inf, np.inf)):
        C, H, W = in_shape
        D = layer.params["dictionary"]
        self.dictionary = PreparedConv(D[:, :, None, None], None, (1, 1), (0, 0, 0, 0), (1, 1), in_shape)
        self.lookup = PreparedConv(layer.map_filters(), layer.params["bias"], layer.stride,
                                   layer.geometry.padding, layer.dilation, (len(D), H, W), act)
        self.in_shape, self.out_shape = tuple(in_shape), self.lookup.out_shape
        self.method = "lcnn (dense)"

    @property
    def act(self):
        return self.lookup.act

    @act.setter
    def act(self, bounds):
        self.lookup.act = bounds

    def __call__(self, x, residual=None):
        """``clamp(lcnn(x) + residual)``; x (N, H, W, C), residual None or (N, Ho, Wo, C_out)."""
        return self.lookup(self.dictionary(x), residual)


def _seconds(step, x, scratch, repeats=3):
    """Best of ``repeats`` timed calls of ``step(x)``, each after the caches were flushed by
    writing ``scratch`` (an array of :data:`EVICT_BYTES`)."""
    step(x)
    best = np.inf
    for _ in range(repeats):
        scratch.fill(1.0)
        t0 = time.perf_counter()
        step(x)
        best = min(best, time.perf_counter() - t0)
    return best


def _act_of(module):
    """Clamp bounds of an activation layer the epilogue can absorb, else None."""
    if isinstance(module, ReLU):
        return (0.0, np.inf)
    if isinstance(module, Clip):
        return (module.min, np.inf if module.max is None else module.max)
    return None


def _run(steps, x):
    for step in steps:
        x = step(x)
    return x


class _Build:
    """What compiling a network carries along: the prepared steps made, and the tuning batch."""

    def __init__(self, tune_batch):
        self.found, self.tune_batch = [], tune_batch
        self.scratch = None if tune_batch is None else np.empty(EVICT_BYTES // 4, _F32)

    def prepare(self, m, shape, act):
        """The prepared step of leaf ``m`` (absorbing clamp ``act``), or None if it has none."""
        if isinstance(m, Conv2d) and m.groups == 1:
            step = PreparedConv.from_layer(m, shape, act, self.tune_batch, self.scratch)
        elif isinstance(m, TreeConv2d):
            step = PreparedTree(m, shape, act)
        elif isinstance(m, LCNNConv2d):
            step = PreparedLCNN(m, shape, act)
        else:
            return None
        self.found.append(step)
        return step


def _flat(modules):
    """Modules with nested chains spliced in (a conv replaced by a Sequential of two convs, as the
    low-rank method does, then fuses its epilogue like any conv)."""
    out = []
    for m in modules:
        node = structure_of(m)
        out += _flat([c for _, c in node.items]) if isinstance(node, Chain) else [m]
    return out


def _chain_steps(modules, shape, build):
    """Steps of a chain of modules on input ``shape``: a conv absorbs the activation after it.
    Prepared steps are made by ``build`` (a :class:`_Build`)."""
    modules = _flat(modules)
    steps, i = [], 0
    while i < len(modules):
        m = modules[i]
        act = _act_of(modules[i + 1]) if i + 1 < len(modules) else None
        step = build.prepare(m, shape, act or (-np.inf, np.inf))
        if step is not None:
            shape, i = step.out_shape, i + (2 if act else 1)
        else:
            step, shape = _compile(m, shape, build)
            i += 1
        steps.append(step)
    return steps, shape


def _compile(module, shape, build):
    """``(step, out_shape)``: ``step(x)`` computes ``module`` on NHWC batches of ``shape`` (C, H, W);
    the prepared steps are made by ``build`` (a :class:`_Build`)."""
    node = structure_of(module)
    if isinstance(node, Chain):
        steps, out = _chain_steps([m for _, m in node.items], shape, build)
        return (lambda x: _run(steps, x)), out
    if isinstance(node, Residual):
        main, out = _chain_steps([m for _, m in node.main], shape, build)
        short, _ = _chain_steps([m for _, m in node.shortcut], shape, build)
        act = _ACTS[node.act]
        last = main[-1]
        if isinstance(last, _Prepared) and last.act == _Prepared.act:
            head, last.act = main[:-1], (_F32(act[0]), _F32(act[1]))
            return (lambda x: last(_run(head, x), residual=_run(short, x))), out

        def block(x):
            y = _run(main, x) + _run(short, x)
            return np.clip(y, _F32(act[0]), _F32(act[1]), out=y)
        return block, out
    return (lambda x: module.forward(x, "NHWC")), tuple(module.out_shape(shape))


class Plan:
    """A network prepared for inference (see the module docstring); made by :func:`prepare`.

    Attributes
    ----------
    input_shape, out_shape : tuple of int
        One image's input shape (C, H, W) and one output's shape.
    prepared : list
        The :class:`PreparedConv` and :class:`PreparedTree` steps, in the order they were made
        (``step.method``: the conv method each convolution uses).
    """

    def __init__(self, net, batch=None):
        folded = fold_batchnorm(net)
        self.input_shape = tuple(net.input_shape)
        self.out_shape = tuple(net.out_shape)
        self.preprocess = copy.deepcopy(net.preprocess)
        self.meta = dict(folded.meta)
        build = _Build(batch)
        self._forward, _ = _compile(folded.body, self.input_shape, build)
        self.prepared = build.found

    def __call__(self, x, layout="NCHW"):
        """Outputs of a preprocessed float batch ``x`` (N, C, H, W) or (N, H, W, C) per ``layout``;
        uint8 ``x``: images 0-255, normalised as ``net.predict`` does."""
        x = np.asarray(x)
        if layout not in ("NCHW", "NHWC"):
            raise ShapeError(f"plan: layout must be 'NCHW' or 'NHWC', got {layout!r}")
        chw = (x.shape[1:] if layout == "NCHW" else x.shape[3:] + x.shape[1:3]) if x.ndim == 4 else None
        if x.ndim != 4 or tuple(chw) != self.input_shape:
            raise ShapeError(f"plan expects a 4-d {layout} batch of images {self.input_shape} "
                             f"(C, H, W), got shape {x.shape}")
        if len(x) == 0:                   # no images: no layer needs to see them
            out = self.out_shape if layout == "NCHW" or len(self.out_shape) != 3 else \
                self.out_shape[1:] + self.out_shape[:1]
            return np.zeros((0,) + tuple(out), _F32)
        if x.dtype == np.uint8:
            x = normalize(x, self.preprocess, self.input_shape[0], layout)
        return self.run(x, layout)

    def run(self, x, layout="NCHW"):
        """:meth:`__call__` without the checks: ``x`` a float batch of the right shape, N >= 1."""
        if layout == "NCHW":
            x = x.transpose(0, 2, 3, 1)
        y = self._forward(np.ascontiguousarray(x, _F32))
        if isinstance(y, tuple):                  # a graph with several outputs
            return tuple(_to_layout(v, layout) for v in y)
        return _to_layout(y, layout)

    def __repr__(self):
        return f"Plan({self.meta.get('arch', 'custom')}, input={self.input_shape}, NHWC)"


def _to_layout(y, layout):
    """A plan's NHWC result in ``layout``."""
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if y.ndim == 4 and layout == "NCHW" else y


def prepare(net, batch=None, attach=False):
    """A :class:`Plan` of ``net``: batch norm folded, NHWC, weights pre-arranged, epilogues fused.

    Parameters
    ----------
    net : Network
    batch : int, optional
        Tune for batches of this size: every 3x3 stride-1 convolution is timed
        with im2col and both Winograd forms (F(2x2, 3x3), F(4x4, 3x3)) on a
        random batch and keeps the fastest (a few ms per layer, once).  None:
        im2col everywhere, and the plan's outputs do not depend on timings.
    attach : bool
        Also make ``net`` run through the plan (``net.plan``): ``net(x)`` and
        ``net.predict`` use it until ``load_state_dict`` or ``set_method``
        drops it, or ``net.unprepare()``.  Parameters written in place are
        not seen by the plan until ``prepare`` is called again.

    Returns
    -------
    Plan
        Callable like ``net``; a snapshot of ``net`` as it is now.
    """
    plan = Plan(net, batch)
    if attach:
        net.plan = plan
    return plan


def warmup():
    """Compile (or load from the on-disk cache) the kernels prepared steps use, serial and
    parallel: the epilogue, the lowering and the Winograd transforms."""
    from .kernels import winograd_kernels as _wk
    from .conv.winograd import TRANSFORMS
    y, res, bias = np.zeros((4, 3), _F32), np.zeros((4, 3), _F32), np.zeros(3, _F32)
    x = np.zeros((1, 6, 6, 2), _F32)
    for entry in ("parallel", "serial"):
        getattr(bias_residual_clamp, entry)(y, bias, res, True, _F32(0), _F32(np.inf))
        getattr(lower_gijc, entry)(x, 1, 3, 3, 1, 1, 1, 1, 1, 1, 6, 6, np.zeros((36, 18), _F32))
        for m in TRANSFORMS:
            BT, _, AT = (np.ascontiguousarray(t, _F32) for t in TRANSFORMS[m])
            V = np.zeros(((m + 2) ** 2, 1, 2), _F32)
            getattr(_wk.input_transform, entry)(x, BT, m, 1, 1, V)
            getattr(_wk.output_transform, entry)(V, AT, 1, 1, m, m, np.zeros(2, _F32), np.zeros((1, m, m, 2), _F32))
    return True
