# cython: language_level=3
"""im2col / col2im and im2row / row2im kernels (private; call them through convnet.fast).

Layout: ``cols[k, n, p]`` with ``k = (c*HH + kh)*WW + kw`` and ``p = i*W_out + j``
holds ``xpad[n, c, i*stride + kh, j*stride + kw]`` (zero where that is padding);
reshaped to ``(K, N*P)`` it is the right-hand operand of the convolution's GEMM.
im2row's ``rows[n, p, (kh*WW + kw)*C + c]`` holds the same value (the channel
axis last); reshaped to ``(N*P, K)`` it is the left-hand operand.

The per-row / per-plane work is a plain inline function on raw pointers in
``_lowering.pxd``, called from the ``prange`` body: gcc optimises loops written
directly inside the ``prange`` body poorly.

These kernels do not validate: the caller guarantees x is (N, C, H, W)
C-contiguous, HH <= H + 2*pad, WW <= W + 2*pad, and cols is
(C*HH*WW, N, H_out*W_out) C-contiguous of the same dtype, with H_out, W_out
the ``output_size`` of ``_window.pxd``; rows is (N, H_out*W_out, HH*WW*C) and
the scratch xt holds at least C*H*W elements.
"""
from cython.parallel import prange
from cython cimport floating

from convnet._fast._lowering cimport (bias_transpose_chunk, col2im_plane, im2col_row, im2row_image,
                                      row2im_image, transpose_tiles)
from convnet._fast._window cimport output_size


def im2col_into(const floating[:, :, :, ::1] x, floating[:, :, ::1] cols,
                Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad, int nthreads=1):
    """Fill ``cols[k, n, i*W_out + j]`` from x; threads split the rows k (each owns its writes)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t H_out = output_size(H, HH, stride, pad), W_out = output_size(W, WW, stride, pad)
    cdef Py_ssize_t K = C * HH * WW
    cdef Py_ssize_t k, c, kh, kw
    with nogil:
        if nthreads == 1:  # an OpenMP region costs about 1 us even on one thread
            k = 0
            for c in range(C):  # row k = (c*HH + kh)*WW + kw, without dividing k
                for kh in range(HH):
                    for kw in range(WW):
                        im2col_row(&x[0, 0, 0, 0], &cols[k, 0, 0], N, C, H, W, c, kh, kw, stride, pad,
                                   H_out, W_out)
                        k += 1
        else:
            for k in prange(K, schedule="static", num_threads=nthreads):
                im2col_row(&x[0, 0, 0, 0], &cols[k, 0, 0], N, C, H, W,
                           k // (HH * WW), (k // WW) % HH, k % WW, stride, pad, H_out, W_out)


def col2im_into(const floating[:, :, ::1] cols, floating[:, :, :, ::1] dx,
                Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad, int nthreads=1):
    """Adjoint of im2col_into: overwrite dx with the sum of the column entries at each input position.

    Threads split the (n, c) planes of dx, so each plane is written by one thread
    and overlapping windows accumulate without races. Each plane is zeroed just
    before it is accumulated into (faster than np.zeros' lazily zeroed pages).
    """
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t H_out = output_size(H, HH, stride, pad), W_out = output_size(W, WW, stride, pad)
    cdef Py_ssize_t nc
    with nogil:
        if nthreads == 1:
            for nc in range(N * C):
                col2im_plane(&cols[0, 0, 0], &dx[nc // C, nc % C, 0, 0], N, nc // C, nc % C,
                             H, W, HH, WW, stride, pad, H_out, W_out)
        else:
            for nc in prange(N * C, schedule="static", num_threads=nthreads):
                col2im_plane(&cols[0, 0, 0], &dx[nc // C, nc % C, 0, 0], N, nc // C, nc % C,
                             H, W, HH, WW, stride, pad, H_out, W_out)


def bias_transpose(const floating[:, :, ::1] res, const floating[::1] b, floating[:, :, ::1] out):
    """out[n, f, p] = res[f, n, p] + b[f]: the GEMM result (F, n, P) to NCHW, bias added on the way.

    One thread, one pass: faster than numpy's transposed add.
    """
    with nogil:
        bias_transpose_chunk(&res[0, 0, 0], &b[0], &out[0, 0, 0], res.shape[0], res.shape[1], res.shape[2])


def im2row_into(const floating[:, :, :, ::1] x, floating[:, :, ::1] rows, floating[::1] xt,
                Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad):
    """Fill ``rows[n, i*W_out + j, (kh*WW + kw)*C + c]`` from x, one thread; xt is scratch of C*H*W elements."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t H_out = output_size(H, HH, stride, pad), W_out = output_size(W, WW, stride, pad)
    cdef Py_ssize_t n
    with nogil:
        for n in range(N):
            transpose_tiles(&x[n, 0, 0, 0], &xt[0], C, H * W, NULL)
            im2row_image(&xt[0], &rows[n, 0, 0], C, H, W, HH, WW, stride, pad, H_out, W_out)


def row2im_into(const floating[:, :, ::1] rows, floating[:, :, :, ::1] dx, floating[::1] xt,
                Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad):
    """Adjoint of im2row_into: overwrite dx with the sum of the row entries at each input position (one thread)."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t H_out = output_size(H, HH, stride, pad), W_out = output_size(W, WW, stride, pad)
    cdef Py_ssize_t n
    with nogil:
        for n in range(N):
            row2im_image(&rows[n, 0, 0], &xt[0], C, H, W, HH, WW, stride, pad, H_out, W_out)
            transpose_tiles(&xt[0], &dx[n, 0, 0, 0], H * W, C, NULL)


def transpose_planes(const floating[:, :, ::1] src, floating[:, :, ::1] dst, const floating[::1] b=None):
    """dst[n, q, p] = src[n, p, q] (+ b[q] when b is given), one thread: a GEMM's (P, F) result to (F, P) and back."""
    cdef Py_ssize_t N = src.shape[0], A = src.shape[1], B = src.shape[2]
    cdef Py_ssize_t n
    cdef const floating* bias = &b[0] if b is not None else NULL
    with nogil:
        for n in range(N):
            transpose_tiles(&src[n, 0, 0], &dst[n, 0, 0], A, B, bias)
