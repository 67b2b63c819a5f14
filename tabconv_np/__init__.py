"""tabconv_np: table-lookup (TabConv) CNN inference in NumPy + Numba, every operation counted.

Importing the package imports nothing else; Numba is imported with the
layers and compiles each kernel on its first use (``tabconv warmup`` compiles
them all up front).  Main entry points::

    tabconv_np.load(path) / tabconv_np.save(net, path)   # HDF5 networks
    tabconv_np.models.build("resnet18-paper", 1, 10)      # bundled architectures
    tabconv_np.conv2d(x, w, ...)                          # like torch.nn.functional.conv2d
    tabconv_np.count_ops(net, (1, 28, 28))                # per-layer operation counts
    tabconv_np.fold_batchnorm(net)
    tabconv_np.convert(net, calibration_images, method="tabconv", ...)
    tabconv_np.prepare(net)                               # a fast inference snapshot of net
    tabconv_np.set_num_threads(n)
"""
import importlib
import os

# OpenBLAS's idle threads busy-wait 2**28 cycles (about 0.1 s) after every BLAS
# call; a parallel Numba kernel that runs next shares its cores with them and
# waits for its slowest thread (a hash-tree ResNet-34 at batch 32 on 2 threads:
# 24 ms, 15 ms with the BLAS limited to 1 thread).  2**20 cycles (about 0.3 ms)
# keeps them awake across the back-to-back products of an exact network and
# lets them sleep during Numba work.  OpenBLAS reads this once, when numpy first
# loads it: effective when tabconv_np is imported before numpy (the CLI does);
# a value the user set wins.  See tabconv_np/threads.py.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")

__version__ = "0.1.0"

_LAZY = {
    "conv2d": "functional", "im2col_rows": "functional",
    "load": "io", "save": "io",
    "count_ops": "ops",
    "fold_batchnorm": "fold",
    "build": "models",
    "Network": "network",
    "set_num_threads": "threads", "get_num_threads": "threads",
    "convert": "conversion", "prepare": "plan",
    "TabConvError": "errors", "ShapeError": "errors", "ConfigError": "errors",
    "WeightFileError": "errors", "DataError": "errors", "UnsafePickleError": "errors",
    "OutputError": "errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'tabconv_np' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
