# cython: language_level=3
"""A batch part of the im2col and im2row convolutions in one call without the GIL (private; see
convnet/fast/conv_im2col.py and conv_im2row.py).

A part's lowering kernels and GEMMs run here back to back, the GEMMs through
numpy's own BLAS (``cblas_sgemm``/``cblas_dgemm``, whose addresses
:mod:`convnet.fast._cblas` finds and :func:`set_gemm` stores). Through numpy,
each of a part's dozen steps is a separate call that takes the GIL back, and
two threads' parts queue for it between their steps.

Layouts as in ``_im2col.pyx``. ``dout`` and ``out`` are (N, F, P) with
``P = H_out*W_out``; the scratch buffers are 1-D and hold at least the
elements each function's docstring names. Nothing here validates: the callers
in :mod:`convnet.fast` check every argument, size the scratch, and call only
after :func:`set_gemm` succeeded.
"""
from cython cimport floating
from libc.stdint cimport int64_t, uintptr_t
from libc.string cimport memcpy

from convnet._fast._lowering cimport (bias_transpose_chunk, col2im_plane, im2col_row, im2row_image,
                                      row2im_image, transpose_tiles)
from convnet._fast._window cimport output_size

# CBLAS's enum values (cblas.h): every BLAS that has a CBLAS interface uses them.
cdef enum:
    ROW_MAJOR = 101
    NO_TRANS = 111
    TRANS = 112

ctypedef void (*sgemm64_t)(int, int, int, int64_t, int64_t, int64_t, float, const float*, int64_t,
                           const float*, int64_t, float, float*, int64_t) noexcept nogil
ctypedef void (*dgemm64_t)(int, int, int, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t) noexcept nogil
ctypedef void (*sgemm32_t)(int, int, int, int, int, int, float, const float*, int,
                           const float*, int, float, float*, int) noexcept nogil
ctypedef void (*dgemm32_t)(int, int, int, int, int, int, double, const double*, int,
                           const double*, int, double, double*, int) noexcept nogil

# Set once by set_gemm; an ILP64 BLAS (64-bit integers) or an LP64 one.
cdef void* _sgemm = NULL
cdef void* _dgemm = NULL
cdef bint _ilp64 = False


def set_gemm(uintptr_t sgemm, uintptr_t dgemm, bint ilp64):
    """Store the addresses of ``cblas_sgemm`` and ``cblas_dgemm`` and whether they take 64-bit integers."""
    global _sgemm, _dgemm, _ilp64
    _sgemm, _dgemm, _ilp64 = <void*>sgemm, <void*>dgemm, ilp64


def gemm_ready():
    """Whether :func:`set_gemm` stored both functions."""
    return _sgemm != NULL and _dgemm != NULL


cdef inline void _gemm(bint ta, bint tb, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A,
                       Py_ssize_t lda, const floating* B, Py_ssize_t ldb, floating beta, floating* C,
                       Py_ssize_t ldc) noexcept nogil:
    # C (M, N) = op(A) @ op(B) + beta * C, row major; op transposes where ta / tb.
    cdef int a = TRANS if ta else NO_TRANS
    cdef int b = TRANS if tb else NO_TRANS
    if floating is float:
        if _ilp64:
            (<sgemm64_t>_sgemm)(ROW_MAJOR, a, b, M, N, K, 1, A, lda, B, ldb, beta, C, ldc)
        else:
            (<sgemm32_t>_sgemm)(ROW_MAJOR, a, b, <int>M, <int>N, <int>K, 1, A, <int>lda, B, <int>ldb, beta, C,
                                <int>ldc)
    else:
        if _ilp64:
            (<dgemm64_t>_dgemm)(ROW_MAJOR, a, b, M, N, K, 1, A, lda, B, ldb, beta, C, ldc)
        else:
            (<dgemm32_t>_dgemm)(ROW_MAJOR, a, b, <int>M, <int>N, <int>K, 1, A, <int>lda, B, <int>ldb, beta, C,
                                <int>ldc)


# The per-chunk loops are functions of their own, not inline: inside the part functions gcc keeps their loop
# pointers on the stack (im2row's channels-last copy ran at half speed).
cdef void _add_bias_grad(const floating* dout, double* db, Py_ssize_t m, Py_ssize_t F,
                         Py_ssize_t P) noexcept nogil:
    # db[f] += the sum of dout[n, f, :] over the chunk's m images (a double sum: float32 planes are long).
    cdef Py_ssize_t n, f, p
    cdef double acc
    cdef const floating* d
    for n in range(m):
        for f in range(F):
            d = dout + (n * F + f) * P
            acc = 0
            for p in range(P):
                acc += d[p]
            db[f] += acc


cdef struct Shape:
    Py_ssize_t C, H, W, F, K, H_out, W_out, P


cdef inline Shape _shape(const Py_ssize_t* x, const Py_ssize_t* w, Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride,
                         Py_ssize_t pad) noexcept nogil:
    # A part's sizes from x (N, C, H, W) and the filter matrix (F, K).
    cdef Shape z
    z.C, z.H, z.W, z.F, z.K = x[1], x[2], x[3], w[0], w[1]
    z.H_out, z.W_out = output_size(z.H, HH, stride, pad), output_size(z.W, WW, stride, pad)
    z.P = z.H_out * z.W_out
    return z


cdef void _im2col_chunk(const floating* x, floating* cols, Py_ssize_t m, Shape z, Py_ssize_t HH,
                        Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    # cols (K, m, P) of the m images from x on.
    cdef Py_ssize_t k
    for k in range(z.K):
        im2col_row(x, cols + k * m * z.P, m, z.C, z.H, z.W, k // (HH * WW), (k // WW) % HH, k % WW,
                   stride, pad, z.H_out, z.W_out)


cdef void _im2row_chunk(const floating* x, floating* rows, floating* xt, Py_ssize_t m, Shape z,
                        Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    # rows (m, P, K) of the m images from x on, each through its channels-last copy in xt.
    cdef Py_ssize_t n
    for n in range(m):
        transpose_tiles(x + n * z.C * z.H * z.W, xt, z.C, z.H * z.W, <floating*>NULL)
        im2row_image(xt, rows + n * z.P * z.K, z.C, z.H, z.W, HH, WW, stride, pad, z.H_out, z.W_out)


cdef void _transpose_chunk(const floating* src, floating* dst, Py_ssize_t m, Py_ssize_t A, Py_ssize_t B,
                           const floating* bias) noexcept nogil:
    # dst[n] (B, A) = src[n] (A, B) transposed (+ bias[q] on row q), for the m planes of a chunk.
    cdef Py_ssize_t n
    for n in range(m):
        transpose_tiles(src + n * A * B, dst + n * A * B, A, B, bias)


cdef void _gather_planes(const floating* dout, floating* dmat, Py_ssize_t m, Py_ssize_t F,
                         Py_ssize_t P) noexcept nogil:
    # dmat (F, m, P) = dout (m, F, P): the GEMMs' operand with the chunk's images side by side.
    cdef Py_ssize_t f, n
    for f in range(F):
        for n in range(m):
            memcpy(dmat + (f * m + n) * P, dout + (n * F + f) * P, P * sizeof(floating))


cdef void _col2im_chunk(const floating* dcols, floating* dx, Py_ssize_t m, Shape z, Py_ssize_t HH,
                        Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    # dx (m, C, H, W) of the chunk = the column gradient (K, m, P) added back.
    cdef Py_ssize_t nc
    for nc in range(m * z.C):
        col2im_plane(dcols, dx + nc * z.H * z.W, m, nc // z.C, nc % z.C, z.H, z.W, HH, WW, stride, pad,
                     z.H_out, z.W_out)


cdef void _row2im_chunk(const floating* drows, floating* dx, floating* xt, Py_ssize_t m, Shape z,
                        Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    # dx (m, C, H, W) of the chunk = the row gradient (m, P, K) added back, channels last in xt, then transposed.
    cdef Py_ssize_t n
    for n in range(m):
        row2im_image(drows + n * z.P * z.K, xt, z.C, z.H, z.W, HH, WW, stride, pad, z.H_out, z.W_out)
        transpose_tiles(xt, dx + n * z.C * z.H * z.W, z.H * z.W, z.C, <floating*>NULL)


def im2col_forward(const floating[:, :, :, ::1] x, const floating[:, ::1] wmat, const floating[::1] b,
                   floating[:, :, ::1] out, floating[::1] cols, floating[::1] res,
                   Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t nb, Py_ssize_t HH, Py_ssize_t WW,
                   Py_ssize_t stride, Py_ssize_t pad):
    """out[lo:hi] = the convolution of x[lo:hi] by wmat (F, K) plus b, in chunks of nb images.

    cols and res hold K*nb*P and F*nb*P elements.
    """
    cdef Shape z = _shape(x.shape, wmat.shape, HH, WW, stride, pad)
    cdef Py_ssize_t n0 = lo, m
    with nogil:
        while n0 < hi:
            m = min(nb, hi - n0)
            _im2col_chunk(&x[n0, 0, 0, 0], &cols[0], m, z, HH, WW, stride, pad)
            _gemm(False, False, z.F, m * z.P, z.K, &wmat[0, 0], z.K, &cols[0], m * z.P, 0, &res[0], m * z.P)
            bias_transpose_chunk(&res[0], &b[0], &out[n0, 0, 0], z.F, m, z.P)
            n0 += m


def im2col_backward(const floating[:, :, :, ::1] x, const floating[:, ::1] wmat, const floating[:, :, ::1] dout,
                    floating[:, :, :, ::1] dx, floating[:, ::1] dw, double[::1] db,
                    floating[::1] cols, floating[::1] dcols, floating[::1] dmat,
                    Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t nb, Py_ssize_t HH, Py_ssize_t WW,
                    Py_ssize_t stride, Py_ssize_t pad, bint per_image, bint dw_transposed):
    """dx[lo:hi] (overwritten; dx None: not computed), dw and db (overwritten) of images lo:hi, in chunks of nb.

    dw is (F, K), or (K, F) with dw_transposed (a long GEMM runs faster
    producing dw^T). per_image: dw and the column gradient by one GEMM per
    image on dout as it lies (thin layers), else through dmat, dout's chunk
    gathered to (F, m*P). cols and dcols hold K*nb*P elements, dmat F*nb*P
    (unused with per_image).
    """
    cdef Shape z = _shape(x.shape, wmat.shape, HH, WW, stride, pad)
    cdef Py_ssize_t F = z.F, K = z.K, P = z.P, C = z.C
    cdef Py_ssize_t n0 = lo, m, n, f, L
    cdef floating beta = 0
    cdef floating* dxp = &dx[0, 0, 0, 0] if dx is not None else NULL
    with nogil:
        for f in range(F):
            db[f] = 0
        while n0 < hi:
            m = min(nb, hi - n0)
            L = m * P
            _im2col_chunk(&x[n0, 0, 0, 0], &cols[0], m, z, HH, WW, stride, pad)
            _add_bias_grad(&dout[n0, 0, 0], &db[0], m, F, P)
            if per_image:
                for n in range(m):
                    _gemm(False, True, F, K, P, &dout[n0 + n, 0, 0], P, &cols[n * P], L, beta, &dw[0, 0], K)
                    beta = 1
                    if dxp != NULL:
                        _gemm(True, False, K, P, F, &wmat[0, 0], K, &dout[n0 + n, 0, 0], P, 0, &dcols[n * P], L)
            else:
                _gather_planes(&dout[n0, 0, 0], &dmat[0], m, F, P)
                if dw_transposed:
                    _gemm(False, True, K, F, L, &cols[0], L, &dmat[0], L, beta, &dw[0, 0], F)
                else:
                    _gemm(False, True, F, K, L, &dmat[0], L, &cols[0], L, beta, &dw[0, 0], K)
                beta = 1
                if dxp != NULL:
                    _gemm(True, False, K, L, F, &wmat[0, 0], K, &dmat[0], L, 0, &dcols[0], L)
            if dxp != NULL:
                _col2im_chunk(&dcols[0], dxp + n0 * C * z.H * z.W, m, z, HH, WW, stride, pad)
            n0 += m


def im2row_forward(const floating[:, :, :, ::1] x, const floating[:, ::1] wt, const floating[::1] b,
                   floating[:, :, ::1] out, floating[::1] rows, floating[::1] res, floating[::1] xt,
                   Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t nb, Py_ssize_t HH, Py_ssize_t WW,
                   Py_ssize_t stride, Py_ssize_t pad):
    """out[lo:hi] = the convolution of x[lo:hi] by wt (F, HH*WW*C, channels last) plus b, in chunks of nb.

    rows and res hold nb*P*K and nb*P*F elements, xt C*H*W.
    """
    cdef Shape z = _shape(x.shape, wt.shape, HH, WW, stride, pad)
    cdef Py_ssize_t n0 = lo, m
    with nogil:
        while n0 < hi:
            m = min(nb, hi - n0)
            _im2row_chunk(&x[n0, 0, 0, 0], &rows[0], &xt[0], m, z, HH, WW, stride, pad)
            _gemm(False, True, m * z.P, z.F, z.K, &rows[0], z.K, &wt[0, 0], z.K, 0, &res[0], z.F)
            _transpose_chunk(&res[0], &out[n0, 0, 0], m, z.P, z.F, &b[0])
            n0 += m


def im2row_backward(const floating[:, :, :, ::1] x, const floating[:, ::1] wt, const floating[:, :, ::1] dout,
                    floating[:, :, :, ::1] dx, floating[:, ::1] dw, double[::1] db,
                    floating[::1] rows, floating[::1] drows, floating[::1] dT, floating[::1] xt,
                    Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t nb, Py_ssize_t HH, Py_ssize_t WW,
                    Py_ssize_t stride, Py_ssize_t pad):
    """dx[lo:hi] (overwritten; dx None: not computed), dw (F, HH*WW*C) and db (overwritten) of images lo:hi.

    rows and drows hold nb*P*K elements, dT nb*P*F, xt C*H*W.
    """
    cdef Shape z = _shape(x.shape, wt.shape, HH, WW, stride, pad)
    cdef Py_ssize_t F = z.F, K = z.K, P = z.P, CHW = z.C * z.H * z.W
    cdef Py_ssize_t n0 = lo, m, f
    cdef floating beta = 0
    cdef floating* dxp = &dx[0, 0, 0, 0] if dx is not None else NULL
    with nogil:
        for f in range(F):
            db[f] = 0
        while n0 < hi:
            m = min(nb, hi - n0)
            _im2row_chunk(&x[n0, 0, 0, 0], &rows[0], &xt[0], m, z, HH, WW, stride, pad)
            _transpose_chunk(&dout[n0, 0, 0], &dT[0], m, F, P, <floating*>NULL)
            _add_bias_grad(&dout[n0, 0, 0], &db[0], m, F, P)
            _gemm(True, False, F, K, m * P, &dT[0], F, &rows[0], K, beta, &dw[0, 0], K)
            beta = 1
            if dxp != NULL:
                _gemm(False, False, m * P, K, F, &dT[0], F, &wt[0, 0], K, 0, &drows[0], K)
                _row2im_chunk(&drows[0], dxp + n0 * CHW, &xt[0], m, z, HH, WW, stride, pad)
            n0 += m
