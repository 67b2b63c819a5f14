"""Chunking of a batch: the convolution drivers lower and multiply a few images at a time."""

#: Lowering buffer size per chunk (bytes).  The batch is lowered and multiplied
#: a few images at a time, so the lowered rows are still in cache (L3 here)
#: when the GEMM reads them and the workspace stays bounded, instead of a full
#: ``N*Ho*Wo x C*kh*kw`` matrix going through main memory.  Not smaller:
#: every chunk is one more parallel region, and a region waits for its
#: slowest thread, which is expensive when other processes share the cores.
CHUNK_BYTES = 4 << 20
#: A chunk holds at least this many rows when the batch allows it: small GEMMs
#: (a few output positions per image in late ResNet stages) waste BLAS's
#: packing of the weight matrix.
MIN_CHUNK_ROWS = 256


def run_chunks(nchunks, work, make_buffers):
    """Run ``work(i, buffers)`` for ``i in range(nchunks)``, in order.

    Each chunk uses the parallel kernels (through ``Kernel.pick``) and multithreaded
    BLAS.  (Running chunks concurrently on a thread pool, each with a serial
    lowering and single-threaded BLAS, was measured too: 1.2x slower in
    geometric mean over the ResNet-18 layers at batch 32 on 2 threads, as
    every thread packs its own copy of the weight and they compete for cache.)
    """
    bufs = make_buffers()
    for i in range(nchunks):
        work(i, bufs)


def images_per_chunk(N, bytes_per_image, rows_per_image=None):
    """Images per chunk: about CHUNK_BYTES each (at least ``MIN_CHUNK_ROWS``
    rows when ``rows_per_image`` is given), spread evenly over the chunks."""
    nb = max(1, CHUNK_BYTES // max(1, bytes_per_image))
    if rows_per_image:
        nb = max(nb, -(-MIN_CHUNK_ROWS // rows_per_image))
    if N <= nb:
        return max(1, N)
    nchunks = -(-N // nb)
    return -(-N // nchunks)
