# cython: language_level=3
"""Winograd F(m x m, 3x3) tile transforms, m = 2 or 4 (private; call them through convnet.fast).

A 3x3 stride-1 convolution with zero padding ``pad`` has ``H_out = H + 2*pad - 2``
outputs per column; they are cut into ``tH = ceil(H_out/m)`` by ``tW = ceil(W_out/m)``
tiles of m x m outputs. Tile ``(ti, tj)`` reads the (m+2) x (m+2) input patch whose
top-left corner is ``(m*ti - pad, m*tj - pad)`` (zero outside the image), and the
convolution of one tile is ``Y = A^T [(G g G^T) * (B^T d B)] A`` (Lavin & Gray, 2015).
The matrices are defined once, in convnet/fast/winograd.py; the kernels here apply
B^T, A^T and their adjoints as unrolled sums, which tests/fast/test_winograd.py checks
against those matrices entry by entry.

Layout of the transformed tiles: ``V[k, c, p]`` with ``k = (m+2)*r + s`` the position
in the transformed tile and ``p = (n*tH + ti)*tW + tj``; likewise ``M[k, f, p]``.
Each ``V[k]`` must be C-contiguous (the kernels do not check); the stride between
the ``nk = (m+2)^2`` slabs ``V[k]`` may be larger than ``C*P`` (the caller pads it so
the slabs do not alias in the cache).
The nk products over the channels are then nk GEMMs ``(nk, F, C) @ (nk, C, P)``.

The four kernels are the input transform, the output transform (plus bias), and
their adjoints for the backward pass. Each loops over the image planes, so every
plane of the output is written by one thread. They do not validate: the caller
guarantees C-contiguous arrays of one dtype with the shapes stated, m in (2, 4),
and ``tH = ceil(H_out/m) >= 1``, ``tW = ceil(W_out/m) >= 1``.
"""
import numpy as np
from cython.parallel import prange, threadid
from cython cimport floating

from convnet._fast._tiles cimport (CB, input_adjoint_plane, input_block_t, input_plane, output_adjoint_plane,
                                   output_plane, scratch_size)


# ---------------------------------------------------------------- entry points
# m = 2 or 4 picks F(2x2, 3x3) or F(4x4, 3x3); nk = (m + 2)^2 rows of V and M.
# Every plane of the output is written by one thread (prange over the planes).


cdef _scratch(floating like, int nthreads, Py_ssize_t tH, Py_ssize_t tW, Py_ssize_t m, Py_ssize_t planes):
    # One scratch_size row per thread.
    return np.empty((max(nthreads, 1), scratch_size(tH, tW, m, planes)),
                    dtype=np.float32 if floating is float else np.float64)


def winograd_input(const floating[:, :, :, ::1] x, floating[:, :, :] V, Py_ssize_t pad,
                   Py_ssize_t tH, Py_ssize_t tW, int nthreads=1, int m=2, bint transposed=False):
    """V[k, c, (n*tH + ti)*tW + tj] = (B^T d B)[k] of the tile (ti, tj) of plane x[n, c].

    ``transposed``: V is (nk, P, C) instead, each slab C-contiguous, and gets
    V[k, (n*tH + ti)*tW + tj, c] (the layout that makes the dw GEMM an NN product).
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t T = tH * tW
    cdef Py_ssize_t kstride = V.strides[0] // sizeof(floating)
    cdef Py_ssize_t nc, nblk = (C + CB - 1) // CB, blk, c0
    cdef floating[:, ::1] buf = _scratch(x[0, 0, 0, 0], nthreads, tH, tW, m, CB if transposed else 1)
    with nogil:
        if transposed:
            for blk in prange(N * nblk, schedule="static", num_threads=nthreads):
                c0 = (blk % nblk) * CB
                input_block_t(&x[blk // nblk, c0, 0, 0], min(<Py_ssize_t>CB, C - c0), &V[0, (blk // nblk) * T, c0],
                              kstride, C, &buf[threadid(), 0], H, W, pad, tH, tW, m)
        else:
            for nc in prange(N * C, schedule="static", num_threads=nthreads):
                input_plane(&x[nc // C, nc % C, 0, 0], &V[0, nc % C, (nc // C) * T], kstride, &buf[threadid(), 0],
                            H, W, pad, tH, tW, m)


def winograd_input_adjoint(const floating[:, :, :] dV, floating[:, :, :, ::1] dx, Py_ssize_t pad,
                           Py_ssize_t tH, Py_ssize_t tW, int nthreads=1, int m=2):
    """Adjoint of winograd_input: dx[n, c] = the sum over its tiles of B dV B^T (every plane is overwritten)."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t T = tH * tW
    cdef Py_ssize_t kstride = dV.strides[0] // sizeof(floating)
    cdef Py_ssize_t nc
    cdef floating[:, ::1] buf = _scratch(dx[0, 0, 0, 0], nthreads, tH, tW, m, 1)
    with nogil:
        for nc in prange(N * C, schedule="static", num_threads=nthreads):
            input_adjoint_plane(&dV[0, nc % C, (nc // C) * T], kstride, &buf[threadid(), 0], &dx[nc // C, nc % C, 0, 0],
                                H, W, pad, tH, tW, m)


def winograd_output(const floating[:, :, :] M, const floating[::1] b, floating[:, :, :, ::1] out,
                    Py_ssize_t tH, Py_ssize_t tW, int nthreads=1, int m=2):
    """out[n, f] = A^T m A + b[f] per tile, m = M[:, f, tiles of image n]; edge tiles cropped."""
    cdef Py_ssize_t N = out.shape[0], F = out.shape[1], Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t T = tH * tW
    cdef Py_ssize_t kstride = M.strides[0] // sizeof(floating)
    cdef Py_ssize_t nf
    cdef floating[:, ::1] buf = _scratch(out[0, 0, 0, 0], nthreads, tH, tW, m, 1)
    with nogil:
        for nf in prange(N * F, schedule="static", num_threads=nthreads):
            output_plane(&M[0, nf % F, (nf // F) * T], kstride, &buf[threadid(), 0], &out[nf // F, nf % F, 0, 0],
                         b[nf % F], Ho, Wo, tH, tW, m)


def winograd_output_adjoint(const floating[:, :, :, ::1] dout, floating[:, :, :] dM, Py_ssize_t tH,
                            Py_ssize_t tW, int nthreads=1, int m=2):
    """Adjoint of winograd_output (without the bias): dM[:, f, tiles of n] = A dY A^T."""
    cdef Py_ssize_t N = dout.shape[0], F = dout.shape[1], Ho = dout.shape[2], Wo = dout.shape[3]
    cdef Py_ssize_t T = tH * tW
    cdef Py_ssize_t kstride = dM.strides[0] // sizeof(floating)
    cdef Py_ssize_t nf
    cdef floating[:, ::1] buf = _scratch(dout[0, 0, 0, 0], nthreads, tH, tW, m, 1)
    with nogil:
        for nf in prange(N * F, schedule="static", num_threads=nthreads):
            output_adjoint_plane(&dout[nf // F, nf % F, 0, 0], &buf[threadid(), 0], &dM[0, nf % F, (nf // F) * T],
                                 kstride, Ho, Wo, tH, tW, m)


# ---------------------------------------------------------------- filter transforms
# The (filter, channel) pairs j of w go through in blocks of FB: each block's 9 weights per pair
# are gathered into rows of FB, so both stages of G w G^T run as loops over FB contiguous values.

cdef enum:
    FB = 128  # pairs per block: the block's rows (9 + 3*alpha of FB values) stay in the L1 cache


cdef inline void _sum_terms(floating* dst, const floating* c, const floating* const* p, Py_ssize_t n,
                            Py_ssize_t nb, bint accumulate) noexcept nogil:
    # dst[b] = c[0] * p[0][b] + ... (accumulate: dst[b] + c[0] * p[0][b] + ...) for n = 1, 2 or 3 terms.
    cdef Py_ssize_t b
    if accumulate:
        if n == 1:
            for b in range(nb):
                dst[b] = dst[b] + c[0] * p[0][b]
        elif n == 2:
            for b in range(nb):
                dst[b] = dst[b] + c[0] * p[0][b] + c[1] * p[1][b]
        else:
            for b in range(nb):
                dst[b] = dst[b] + c[0] * p[0][b] + c[1] * p[1][b] + c[2] * p[2][b]
    elif n == 1:
        for b in range(nb):
            dst[b] = c[0] * p[0][b]
    elif n == 2:
        for b in range(nb):
            dst[b] = c[0] * p[0][b] + c[1] * p[1][b]
    else:
        for b in range(nb):
            dst[b] = c[0] * p[0][b] + c[1] * p[1][b] + c[2] * p[2][b]


cdef inline void _combine(floating* dst, const floating* src, Py_ssize_t sstride, const floating* coef,
                          Py_ssize_t nterms, Py_ssize_t nb) noexcept nogil:
    # dst[b] = sum_t coef[t] * src[t*sstride + b] for b < nb and nterms <= 6, skipping zero coefficients
    # (0 * inf would be NaN), summed in t's order; three terms per pass over dst: a pass per term was bound
    # by dst's loads and stores.
    cdef Py_ssize_t t, b, n = 0
    cdef floating c[6]
    cdef const floating* p[6]
    for t in range(nterms):
        if coef[t] != 0:
            c[n] = coef[t]
            p[n] = src + t * sstride
            n += 1
    if n == 0:
        for b in range(nb):
            dst[b] = 0
        return
    _sum_terms(dst, c, p, min(n, 3), nb, False)
    if n > 3:
        _sum_terms(dst, c + 3, p + 3, n - 3, nb, True)


cdef _filter_scratch(floating like, const double[:, ::1] G):
    # [9 rows of FB weights][3*alpha rows of FB: the first stage][gcol][grow], the coefficient tables filled:
    # gcol[l*alpha + r] = grow[r*3 + l] = G[r, l] in the kernels' precision.
    cdef Py_ssize_t alpha = G.shape[0], r, l
    cdef floating[::1] scratch = np.empty((9 + 3 * alpha) * FB + 6 * alpha,
                                          dtype=np.float32 if floating is float else np.float64)
    cdef floating* gcol = &scratch[(9 + 3 * alpha) * FB]
    for r in range(alpha):
        for l in range(3):
            gcol[l * alpha + r] = <floating>G[r, l]
            gcol[3 * alpha + r * 3 + l] = <floating>G[r, l]
    return scratch


def winograd_filter(const floating[:, :, :, ::1] w, floating[:, :, ::1] U, const double[:, ::1] G,
                    Py_ssize_t lo=0, Py_ssize_t hi=-1):
    """U[k, f, c] = (G w[f, c] G^T)[r, s], k = alpha*r + s, for the pairs j = f*C + c, lo <= j < hi (hi -1: all).

    U is (nk, F, C); G is the (alpha, 3) filter matrix, alpha = 4 or 6.
    """
    cdef Py_ssize_t F = w.shape[0], C = w.shape[1], alpha = G.shape[0]
    cdef Py_ssize_t J = F * C, j0, b, nb, e, r, s, l
    if hi < 0:
        hi = J
    cdef floating[::1] scratch = _filter_scratch(w[0, 0, 0, 0], G)
    cdef floating* wb = &scratch[0]
    cdef floating* t1 = wb + 9 * FB
    cdef floating* grow = t1 + 3 * alpha * FB + 3 * alpha
    cdef const floating* src
    cdef floating* out = &U[0, 0, 0]
    with nogil:
        j0 = lo
        while j0 < hi:
            nb = min(<Py_ssize_t>FB, hi - j0)
            src = &w[0, 0, 0, 0] + j0 * 9
            for e in range(9):  # e outer: gcc vectorises the strided reads over b
                for b in range(nb):
                    wb[e * FB + b] = src[b * 9 + e]
            # t1[r, l] = sum_i G[r, i] w[i, l]; U[r*alpha + s] = sum_l G[s, l] t1[r, l]
            for r in range(alpha):
                for l in range(3):
                    _combine(t1 + (r * 3 + l) * FB, wb + l * FB, 3 * FB, grow + r * 3, 3, nb)
            for r in range(alpha):
                for s in range(alpha):
                    _combine(out + (r * alpha + s) * J + j0, t1 + r * 3 * FB, FB, grow + s * 3, 3, nb)
            j0 += FB


def winograd_filter_adjoint(const floating[:, :, ::1] dU, floating[:, :, :, ::1] dw, const double[:, ::1] G,
                            Py_ssize_t lo=0, Py_ssize_t hi=-1):
    """dw[f, c] = G^T dU[:, f, c] G (dU (nk, F, C), pair j = f*C + c) for the pairs lo <= j < hi (hi -1: all)."""
    cdef Py_ssize_t F = dw.shape[0], C = dw.shape[1], alpha = G.shape[0]
    cdef Py_ssize_t J = F * C, j0, b, nb, e, r, l, i
    if hi < 0:
        hi = J
    cdef floating[::1] scratch = _filter_scratch(dU[0, 0, 0], G)
    cdef floating* wb = &scratch[0]
    cdef floating* t1 = wb + 9 * FB
    cdef floating* gcol = t1 + 3 * alpha * FB
    cdef const floating* src = &dU[0, 0, 0]
    cdef floating* dwflat = &dw[0, 0, 0, 0]
    cdef floating* dst
    with nogil:
        j0 = lo
        while j0 < hi:
            nb = min(<Py_ssize_t>FB, hi - j0)
            # t1[r, l] = sum_s dU[r*alpha + s] G[s, l]; dw[i, l] = sum_r G[r, i] t1[r, l]
            for r in range(alpha):
                for l in range(3):
                    _combine(t1 + (r * 3 + l) * FB, src + r * alpha * J + j0, J, gcol + l * alpha, alpha, nb)
            for i in range(3):
                for l in range(3):
                    _combine(wb + (i * 3 + l) * FB, t1 + l * FB, 3 * FB, gcol + i * alpha, alpha, nb)
            dst = dwflat + j0 * 9
            for e in range(9):
                for b in range(nb):
                    dst[b * 9 + e] = wb[e * FB + b]
            j0 += FB
