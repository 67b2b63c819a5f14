"""Numba kernels, and nothing else: no validation, explicit output buffers.

Every module here holds only ``@kernel``-compiled functions (each a
:class:`~tabconv_np.kernels._jit.Kernel` with ``.parallel`` and ``.serial``
entries that agree bitwise, see :mod:`tabconv_np.kernels._jit`) and the
constants they need.  The Python code that validates, chunks a batch,
allocates the output buffers and calls them lives outside this package.

Naming: a kernel module is called ``<algorithm>_kernels``, so that no two
modules of the package share a name; its driver, if any, is the module named
after the algorithm alone:

======================  ==========================================================
kernel module           driver / caller
======================  ==========================================================
``im2col_kernels``      :mod:`tabconv_np.conv.im2col` (and ``functional.im2col_rows``)
``mec_kernels``         :mod:`tabconv_np.conv.mec`
``direct_kernels``      :mod:`tabconv_np.conv.direct`
``layout_kernels``      :mod:`tabconv_np.conv.layout` (NCHW -> NHWC copies)
``pq_kernels``          :mod:`tabconv_np.pq` and :mod:`tabconv_np.tables`
======================  ==========================================================

The readable NumPy versions the kernels are tested against are in
:mod:`tabconv_np.reference`.
"""
