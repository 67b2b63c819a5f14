"""Bring your own model: import PyTorch, ONNX and Keras weights without their frameworks.

Modules (each imported only when used; none imports torch, onnx or keras at
import time):

* :mod:`.torch_pickle` -- read ``torch.save`` files (zip and legacy formats)
  through a restricted unpickler that never runs code from the file;
* :mod:`.statedict` -- map a state dict onto a bundled architecture by name
  (torchvision-style and CIFAR-repository-style names);
* :mod:`.spec` -- build any plain CNN from a small JSON spec plus a state
  dict (format in ``docs/import_spec.md``);
* :mod:`.onnx_import` -- ONNX graphs (needs the ``onnx`` package only);
* :mod:`.keras` -- Keras 2 ``.h5``, Keras 3 ``.weights.h5`` and ``.keras`` files
  (h5py only);
* :mod:`.graph` -- the extra layer types imported graphs may need
  (``Graph`` for general residual graphs, ``Clip`` for ReLU6);
* :mod:`.formats` -- format detection by content (a leaf: it imports no
  other importer, so every format module may use it);
* :mod:`.dispatch` -- :func:`import_model`, which detects the format and calls
  the format's module (the ``tabconv import`` command is in
  :mod:`tabconv_np.cli.import_`).

Typical use::

    from tabconv_np.importers import import_model
    net = import_model("resnet.pt", arch="resnet18-paper", input_shape=(1, 28, 28))
"""
import importlib

_LAZY = {
    "import_model": "dispatch", "detect_format": "formats",
    "read_torch": "torch_pickle",
    "network_from_state_dict": "statedict",
    "build_from_spec": "spec", "load_spec": "spec",
    "import_onnx": "onnx_import",
    "import_keras": "keras",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'tabconv_np.importers' has no attribute {name!r}")
