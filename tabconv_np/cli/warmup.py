"""``tabconv warmup``: compile (and cache on disk) every kernel signature the bundled networks use."""
import sys
import time

import numpy as np

from ..models import build


def add_parser(sub):
    w = sub.add_parser("warmup", help="compile and cache every kernel (run once on a new machine)")
    w.set_defaults(func=run)
    return w


def run(args):
    """Compile (and cache on disk) every kernel signature the bundled networks use."""
    t0 = time.perf_counter()
    for arch in ("resnet18-paper", "nin", "lenet"):
        net = build(arch, 1, 10)
        x = np.zeros((2,) + net.input_shape, np.float32)
        for method in ("im2col", "mec", "direct", "auto"):
            for layout in ("NCHW", "NHWC"):
                net.set_method(method)
                net.layout = layout
                net(x)
        print(f"warmed {arch}", file=sys.stderr)
    # imported here, not at the top: tables loads Numba, which every other command would pay for
    from ..tables import warmup as table_warmup
    table_warmup()
    print("warmed table kernels", file=sys.stderr)
    from ..hashtree import warmup as tree_learning_warmup
    tree_learning_warmup()
    print("warmed hash-tree learning kernels", file=sys.stderr)
    from ..tree_tables import warmup as tree_warmup
    tree_warmup()
    print("warmed hash-tree layer kernels", file=sys.stderr)
    from ..plan import warmup as plan_warmup
    plan_warmup()
    print("warmed prepared-plan kernels (epilogue, Winograd)", file=sys.stderr)
    from ..lcnn import warmup as lcnn_warmup
    lcnn_warmup()
    print("warmed LCNN lookup kernel", file=sys.stderr)
    print(f"kernels compiled and cached in {time.perf_counter() - t0:.1f} s")
