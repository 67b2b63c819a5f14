"""RSDTR, reduced-storage direct tensor-ring convolution (Gabor & Zdunek, arXiv 2405.10802).

The kernel ``W`` (C_out, C_in, kH, kW) is stored as a ring of four cores::

    W[o, c, i, j] = trace(G_out[:, o, :] @ G_in[:, c, :] @ G_h[:, i, :] @ G_w[:, j, :])
                  = sum over a0..a3 of G_out[a3, o, a0] G_in[a0, c, a1] G_h[a1, i, a2] G_w[a2, j, a3]

with ``G_out`` (r3, C_out, r0), ``G_in`` (r0, C_in, r1), ``G_h`` (r1, kH, r2),
``G_w`` (r2, kW, r3), and the convolution runs directly on the cores in four
sublayers (``a0`` rides along as a batch index in 2 and 3):

1. contraction over C_in, per pixel: ``z1[a0, a1] = sum_c G_in[a0, c, a1] x[c]``
   (``H*W*C_in*r0*r1`` multiply-adds per image);
2. a (kH, 1) convolution r1 -> r2 with the H stride, padding and dilation:
   ``z2[a0, a2, ho, w] = sum_{a1, i} G_h[a1, i, a2] z1[a0, a1, ho*sh + i*dh - pt, w]``
   (``Ho*W*r0*r1*r2*kH``);
3. a (1, kW) convolution r2 -> r3 along W in the same way
   (``Ho*Wo*r0*r2*r3*kW``);
4. contraction over (a3, a0) to C_out, plus the bias:
   ``y[o] = bias[o] + sum_{a0, a3} G_out[a3, o, a0] z3[a0, a3]`` (``Ho*Wo*r0*r3*C_out``).

Each sublayer is one or a few BLAS products (float32).  The readable
reference, :func:`tabconv_np.reference.rsdtr_conv_naive`, is the dense
convolution with the kernel rebuilt from the cores.  ``cost`` reports the sum
of the four stages as ``macs`` (:meth:`RSDTRConv2d.stage_macs` gives them
apart) and the bias adds; the parameters are the four cores and the bias.
"""
import numpy as np

from .errors import ConfigError
from .geometry import attach_geometry
from .module import Module
from .validate import as_int, check_parameters

#: Parameter names of the cores, in ring order, and the mode each carries.
CORES = ("core_out", "core_in", "core_h", "core_w")


def rebuild_kernel(core_out, core_in, core_h, core_w):
    """The dense kernel ``(C_out, C_in, kH, kW)`` of four ring cores, in float64."""
    f = [np.asarray(c, np.float64) for c in (core_out, core_in, core_h, core_w)]
    return np.einsum("doa,acb,bie,ejd->ocij", *f, optimize=True)


class RSDTRConv2d(Module):
    """Tensor-ring convolution in four sublayers (interchangeable with a ``Conv2d`` of groups 1).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, dilation :
        As in ``Conv2d`` (groups are not supported).
    ranks : (r0, r1, r2, r3)
        The ring ranks: r0 between C_out and C_in, r1 between C_in and kH,
        r2 between kH and kW, r3 between kW and C_out.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 ranks=(1, 1, 1, 1)):
        super().__init__()
        g = attach_geometry(self, "RSDTRConv2d", in_channels, out_channels, kernel_size, stride,
                            padding, dilation)
        if len(ranks) != 4:
            raise ConfigError(f"RSDTRConv2d: ranks must be 4 ints (r0, r1, r2, r3), got {ranks!r}")
        self.ranks = tuple(as_int(r, "RSDTRConv2d: ranks", 1) for r in ranks)
        r0, r1, r2, r3 = self.ranks
        (kh, kw), C_in, C_out = g.kernel_size, g.C_in, g.C_out
        shapes = {"core_out": (r3, C_out, r0), "core_in": (r0, C_in, r1), "core_h": (r1, kh, r2),
                  "core_w": (r2, kw, r3)}
        check_parameters(sum(int(np.prod(s)) for s in shapes.values()) + C_out, "RSDTRConv2d")
        for name, shape in shapes.items():
            self.params[name] = np.zeros(shape, np.float32)
        self.params["bias"] = np.zeros(C_out, np.float32)

    @classmethod
    def from_config(cls, cfg, build):
        try:
            return cls(cfg["in_channels"], cfg["out_channels"], cfg["kernel_size"], cfg.get("stride", 1),
                       cfg.get("padding", 0), cfg.get("dilation", 1), tuple(cfg["ranks"]))
        except KeyError as e:
            raise ConfigError(f"RSDTRConv2d: config lacks {e}") from None

    def config(self):
        return {"type": "RSDTRConv2d", **self.geometry.config(), "ranks": list(self.ranks)}

    def kernel(self):
        """The dense kernel ``(C_out, C_in, kH, kW)`` the layer computes (float64)."""
        return rebuild_kernel(*(self.params[c] for c in CORES))

    def features(self, x, layout):
        """Sublayers 1-3: ``z3`` ``(N, Ho, Wo, r0*r3)`` float32, the input of sublayer 4."""
        self.geometry.check_batch(x, layout, "RSDTRConv2d")
        x = np.asarray(x, np.float32)
        x = x if layout == "NHWC" else x.transpose(0, 2, 3, 1)
        p, (r0, r1, r2, r3) = self.params, self.ranks
        N, H, W, C = x.shape
        Ho, Wo = self.geometry.out_hw(H, W)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        pt, pb, pl, pr = self.geometry.padding
        # 1. over C_in: (N*H*W, C) @ (C, r0*r1)
        z1 = x.reshape(-1, C) @ p["core_in"].transpose(1, 0, 2).reshape(C, r0 * r1)
        z1p = np.zeros((N, H + pt + pb, W, r0, r1), np.float32)
        z1p[:, pt:pt + H] = z1.reshape(N, H, W, r0, r1)
        # 2. (kH, 1) convolution r1 -> r2 along H, one product per tap
        z2 = np.zeros((N * Ho * W * r0, r2), np.float32)
        for i in range(kh):
            taps = z1p[:, i * dh: i * dh + sh * (Ho - 1) + 1: sh]
            z2 += np.ascontiguousarray(taps).reshape(-1, r1) @ p["core_h"][:, i, :]
        z2p = np.zeros((N, Ho, W + pl + pr, r0, r2), np.float32)
        z2p[:, :, pl:pl + W] = z2.reshape(N, Ho, W, r0, r2)
        # 3. (1, kW) convolution r2 -> r3 along W
        z3 = np.zeros((N * Ho * Wo * r0, r3), np.float32)
        for j in range(kw):
            taps = z2p[:, :, j * dw: j * dw + sw * (Wo - 1) + 1: sw]
            z3 += np.ascontiguousarray(taps).reshape(-1, r2) @ p["core_w"][:, j, :]
        return z3.reshape(N, Ho, Wo, r0 * r3)

    def out_matrix(self):
        """Sublayer 4's matrix ``(r0*r3, C_out)``: row ``a0*r3 + a3`` is ``G_out[a3, :, a0]``."""
        r0, r3 = self.ranks[0], self.ranks[3]
        return self.params["core_out"].transpose(2, 0, 1).reshape(r0 * r3, self.out_channels)

    def forward(self, x, layout):
        z3 = self.features(x, layout)
        N, Ho, Wo, R = z3.shape
        y = (z3.reshape(-1, R) @ self.out_matrix() + self.params["bias"]).reshape(N, Ho, Wo, -1)
        return y if layout == "NHWC" else np.ascontiguousarray(y.transpose(0, 3, 1, 2))

    def out_shape(self, in_shape):
        return self.geometry.out_shape(in_shape, "RSDTRConv2d")

    def stage_macs(self, in_shape):
        """Multiply-adds of the four sublayers for one image ``(C_in, H, W)`` (module docstring)."""
        C_out, Ho, Wo = self.out_shape(in_shape)
        H, W = in_shape[1], in_shape[2]
        r0, r1, r2, r3 = self.ranks
        kh, kw = self.kernel_size
        return (H * W * self.in_channels * r0 * r1, Ho * W * r0 * r1 * r2 * kh,
                Ho * Wo * r0 * r2 * r3 * kw, Ho * Wo * r0 * r3 * C_out)

    def cost(self, in_shape):
        C_out, Ho, Wo = self.out_shape(in_shape)
        return {"macs": sum(self.stage_macs(in_shape)), "bias_adds": C_out * Ho * Wo}
