"""The project's exception types.

Every error a user can provoke with bad input (a wrong shape, a bad file, a
missing data set) is one of these, and its message names what is wrong: the
file, the dataset inside it, the layer, the shape.  Kernels never validate;
the public functions in front of them do, and raise these.
"""


class TabConvError(Exception):
    """Base class of every error raised on purpose by tabconv_np."""


class ShapeError(TabConvError, ValueError):
    """An array has the wrong shape, dtype or layout for the operation."""


class ConfigError(TabConvError, ValueError):
    """A network, layer or conversion is configured with invalid settings."""


class WeightFileError(TabConvError):
    """A weight file cannot be read: not HDF5, truncated, wrong datasets, bad values."""


class DataError(TabConvError):
    """A data set is missing, truncated or malformed."""


class UnsafePickleError(WeightFileError, DataError):
    """A pickle asks for something the restricted unpickler refuses to build.

    Raised by :mod:`tabconv_np.safe_pickle` for weight files and data sets alike, so it
    is both a WeightFileError and a DataError: callers catching either still catch it.
    """


class OutputError(TabConvError):
    """An output file cannot be written: it exists, is the input, or its directory is missing or read-only."""


class SettingWarning(UserWarning):
    """A setting that does not do everywhere what it says: clamped, rounded to nothing, or padding.

    ``convert`` issues one per kind, naming the layers, before any fitting.
    """
