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
