"""Convolution drivers: one module per algorithm, no validation.

Each driver (``conv2d_im2col``, ``conv2d_mec``, ``conv2d_direct``, all with
the signature ``(x, weight, bias, stride, padding, dilation, groups, layout,
out_hw)``) takes float32 arrays and settings already checked and normalised by
:func:`tabconv_np.functional.conv2d`, chooses the chunking, allocates the
output buffers and calls the Numba kernels of
``tabconv_np.kernels.<algorithm>_kernels`` (see :mod:`tabconv_np.kernels`
for the naming):

===========  ================================================================
``im2col``   im2col lowering + BLAS GEMM; :func:`~tabconv_np.conv.im2col.lower`
             builds the public im2col rows
``mec``      MEC lowering (about kh/sh times smaller) + GEMMs over its windows
``direct``   reordered loops on a phase-split padded input, no lowering buffer
``layout``   NCHW <-> NHWC copies, the (kh, kw, C) weight matrix
``chunks``   how many images a lowering chunk holds, and the chunk loop
===========  ================================================================
"""
