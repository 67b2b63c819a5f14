"""Numba kernels: no validation, explicit output buffers.

Each module holds one algorithm.  The validating public API that calls them
lives outside this package (``tabconv_np.functional``, ``tabconv_np.pq``, ...).
"""
