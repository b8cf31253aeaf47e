# cython: language_level=3
"""im2col / col2im and im2row / row2im kernels (private; call them through convnet.fast).

Layout: ``cols[k, n, p]`` with ``k = (c*HH + kh)*WW + kw`` and ``p = i*W_out + j``
holds ``xpad[n, c, i*stride + kh, j*stride + kw]`` (zero where that is padding);
reshaped to ``(K, N*P)`` it is the right-hand operand of the convolution's GEMM.
im2row's ``rows[n, p, (kh*WW + kw)*C + c]`` holds the same value (the channel
axis last); reshaped to ``(N*P, K)`` it is the left-hand operand.

The per-row / per-plane work is a plain ``cdef`` function on raw pointers, called
from the ``prange`` body: gcc optimises loops written directly inside the
``prange`` body poorly.

These kernels do not validate: the caller guarantees x is (N, C, H, W)
C-contiguous, HH <= H + 2*pad, WW <= W + 2*pad, and cols is
(C*HH*WW, N, H_out*W_out) C-contiguous of the same dtype, with H_out, W_out
the ``output_size`` of ``_window.pxd``; rows is (N, H_out*W_out, HH*WW*C) and
the scratch xt holds at least C*H*W elements.
"""
from cython.parallel import prange
from cython cimport floating
from libc.string cimport memcpy, memset

from convnet._fast._window cimport output_size, tap_span, window_span


cdef inline void _im2col_row(const floating* x, floating* row, Py_ssize_t N, Py_ssize_t C,
                             Py_ssize_t H, Py_ssize_t W, Py_ssize_t c, Py_ssize_t kh, Py_ssize_t kw,
                             Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t H_out,
                             Py_ssize_t W_out) noexcept nogil:
    # Fill one row k = (c, kh, kw) of cols: N*H_out*W_out entries. The output rows whose tap falls in the
    # padding are contiguous runs, zeroed in one call each; the others copy jhi - jlo strided inputs.
    cdef Py_ssize_t n, i, j, ilo, ihi, jlo, jhi, nj
    cdef Py_ssize_t P = H_out * W_out
    cdef const floating* xr
    cdef floating* r
    ilo, ihi = tap_span(kh, stride, pad, H, H_out)
    jlo, jhi = tap_span(kw, stride, pad, W, W_out)
    nj = jhi - jlo
    if ihi <= ilo or nj <= 0:
        memset(row, 0, N * P * sizeof(floating))
        return
    for n in range(N):
        r = row + n * P
        if ilo > 0:
            memset(r, 0, ilo * W_out * sizeof(floating))
        if ihi < H_out:
            memset(r + ihi * W_out, 0, (H_out - ihi) * W_out * sizeof(floating))
        xr = x + ((n * C + c) * H + ilo * stride - pad + kh) * W + (jlo * stride - pad + kw)
        r += ilo * W_out
        for i in range(ihi - ilo):
            for j in range(jlo):
                r[j] = 0
            if stride == 1:
                if nj >= 16:  # libc's copy on long rows; on short ones its call costs more than the copy
                    memcpy(r + jlo, xr, nj * sizeof(floating))
                else:
                    for j in range(nj):
                        r[jlo + j] = xr[j]
            elif stride == 2:  # a constant stride lets gcc vectorise the loads
                for j in range(nj):
                    r[jlo + j] = xr[2 * j]
            else:
                for j in range(nj):
                    r[jlo + j] = xr[j * stride]
            for j in range(jhi, W_out):
                r[j] = 0
            r += W_out
            xr += stride * W


def im2col_into(const floating[:, :, :, ::1] x, floating[:, :, ::1] cols,
                Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad, int nthreads=1):
    """Fill ``cols[k, n, i*W_out + j]`` from x; threads split the rows k (each owns its writes)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t H_out = output_size(H, HH, stride, pad), W_out = output_size(W, WW, stride, pad)
    cdef Py_ssize_t K = C * HH * WW
    cdef Py_ssize_t k
    with nogil:
        if nthreads == 1:  # an OpenMP region costs about 1 us even on one thread
            for k in range(K):
                _im2col_row(&x[0, 0, 0, 0], &cols[k, 0, 0], N, C, H, W,
                            k // (HH * WW), (k // WW) % HH, k % WW, stride, pad, H_out, W_out)
        else:
            for k in prange(K, schedule="static", num_threads=nthreads):
                _im2col_row(&x[0, 0, 0, 0], &cols[k, 0, 0], N, C, H, W,
                            k // (HH * WW), (k // WW) % HH, k % WW, stride, pad, H_out, W_out)


cdef inline void _col2im_plane(const floating* cols, floating* dx, Py_ssize_t N, Py_ssize_t n,
                               Py_ssize_t c, Py_ssize_t H, Py_ssize_t W, Py_ssize_t HH, Py_ssize_t WW,
                               Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t H_out,
                               Py_ssize_t W_out) noexcept nogil:
    # Zero dx (plane (n, c)), then accumulate every column entry that came from that plane.
    cdef Py_ssize_t kh, kw, i, j, ilo, ihi, jlo, jhi
    cdef Py_ssize_t P = H_out * W_out
    cdef const floating* r
    cdef floating* d
    memset(dx, 0, H * W * sizeof(floating))
    for kh in range(HH):
        ilo, ihi = tap_span(kh, stride, pad, H, H_out)
        for kw in range(WW):
            jlo, jhi = tap_span(kw, stride, pad, W, W_out)
            if jlo >= jhi:
                continue
            for i in range(ilo, ihi):
                r = cols + (((c * HH + kh) * WW + kw) * N + n) * P + i * W_out + jlo
                d = dx + (i * stride - pad + kh) * W + (jlo * stride - pad + kw)
                if stride == 1:
                    for j in range(jhi - jlo):
                        d[j] += r[j]
                elif stride == 2:
                    for j in range(jhi - jlo):
                        d[2 * j] += r[j]
                else:
                    for j in range(jhi - jlo):
                        d[j * stride] += r[j]


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
                _col2im_plane(&cols[0, 0, 0], &dx[nc // C, nc % C, 0, 0], N, nc // C, nc % C,
                              H, W, HH, WW, stride, pad, H_out, W_out)
        else:
            for nc in prange(N * C, schedule="static", num_threads=nthreads):
                _col2im_plane(&cols[0, 0, 0], &dx[nc // C, nc % C, 0, 0], N, nc // C, nc % C,
                              H, W, HH, WW, stride, pad, H_out, W_out)


def bias_transpose(const floating[:, :, ::1] res, const floating[::1] b, floating[:, :, ::1] out):
    """out[n, f, p] = res[f, n, p] + b[f]: the GEMM result (F, n, P) to NCHW, bias added on the way.

    One thread, one pass: faster than numpy's transposed add.
    """
    cdef Py_ssize_t F = res.shape[0], N = res.shape[1], P = res.shape[2]
    cdef Py_ssize_t n, f, p
    cdef const floating* src
    cdef floating* dst
    cdef floating bf
    with nogil:
        for n in range(N):
            for f in range(F):
                src = &res[f, n, 0]
                dst = &out[n, f, 0]
                bf = b[f]
                for p in range(P):
                    dst[p] = src[p] + bf


# ---- im2row: the transposed layout, rows[n, i*W_out + j, (kh*WW + kw)*C + c] = xpad[n, c, i*stride + kh, j*stride + kw].
# One image at a time through a channels-last copy xt (H*W*C elements, the caller's scratch): the taps kw of one
# kh are then one contiguous run of C*(taps in range) elements, whatever the stride.

# A transpose goes tile by tile, TILE x TILE: the tile's source rows stay in L1 even when they lie 4 KiB apart
# (a 32x32 float32 plane), which map to one cache set, and its destination rows too.
DEF TILE = 8


cdef inline void _transpose(const floating* s, floating* d, Py_ssize_t A, Py_ssize_t B,
                            const floating* bias) noexcept nogil:
    # d[q*A + a] = s[a*B + q] (+ bias[q] unless bias is NULL).
    cdef Py_ssize_t a0, q0, a, q, a1, q1
    for a0 in range(0, A, TILE):
        a1 = a0 + TILE if a0 + TILE < A else A
        for q0 in range(0, B, TILE):
            q1 = q0 + TILE if q0 + TILE < B else B
            for q in range(q0, q1):
                if bias != NULL:
                    for a in range(a0, a1):
                        d[q * A + a] = s[a * B + q] + bias[q]
                else:
                    for a in range(a0, a1):
                        d[q * A + a] = s[a * B + q]


cdef inline void _im2row_image(const floating* xt, floating* rows, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                               Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad,
                               Py_ssize_t H_out, Py_ssize_t W_out) noexcept nogil:
    cdef Py_ssize_t i, j, kh, hi, wlo, klo, khi
    cdef Py_ssize_t K = HH * WW * C
    cdef floating* r
    for i in range(H_out):
        for j in range(W_out):
            r = rows + (i * W_out + j) * K
            window_span(j, WW, stride, pad, W, &klo, &khi)  # input columns, then the taps kw they are
            wlo = j * stride - pad
            klo -= wlo
            khi -= wlo
            for kh in range(HH):
                hi = i * stride - pad + kh
                if hi < 0 or hi >= H or khi <= klo:
                    memset(r + kh * WW * C, 0, WW * C * sizeof(floating))
                    continue
                if klo > 0:
                    memset(r + kh * WW * C, 0, klo * C * sizeof(floating))
                memcpy(r + (kh * WW + klo) * C, xt + (hi * W + wlo + klo) * C, (khi - klo) * C * sizeof(floating))
                if khi < WW:
                    memset(r + (kh * WW + khi) * C, 0, (WW - khi) * C * sizeof(floating))


def im2row_into(const floating[:, :, :, ::1] x, floating[:, :, ::1] rows, floating[::1] xt,
                Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad):
    """Fill ``rows[n, i*W_out + j, (kh*WW + kw)*C + c]`` from x, one thread; xt is scratch of C*H*W elements."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t H_out = output_size(H, HH, stride, pad), W_out = output_size(W, WW, stride, pad)
    cdef Py_ssize_t n
    with nogil:
        for n in range(N):
            _transpose(&x[n, 0, 0, 0], &xt[0], C, H * W, NULL)
            _im2row_image(&xt[0], &rows[n, 0, 0], C, H, W, HH, WW, stride, pad, H_out, W_out)


cdef inline void _row2im_image(const floating* rows, floating* xt, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                               Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad,
                               Py_ssize_t H_out, Py_ssize_t W_out) noexcept nogil:
    # xt (H*W*C, channels last) = the sum of every row entry at the input position it came from.
    cdef Py_ssize_t i, j, kh, hi, wlo, klo, khi, e, L
    cdef Py_ssize_t K = HH * WW * C
    cdef const floating* r
    cdef floating* d
    memset(xt, 0, H * W * C * sizeof(floating))
    for i in range(H_out):
        for j in range(W_out):
            window_span(j, WW, stride, pad, W, &klo, &khi)
            wlo = j * stride - pad
            klo -= wlo
            khi -= wlo
            if khi <= klo:
                continue
            L = (khi - klo) * C
            for kh in range(HH):
                hi = i * stride - pad + kh
                if hi < 0 or hi >= H:
                    continue
                r = rows + (i * W_out + j) * K + (kh * WW + klo) * C
                d = xt + (hi * W + wlo + klo) * C
                for e in range(L):
                    d[e] += r[e]


def row2im_into(const floating[:, :, ::1] rows, floating[:, :, :, ::1] dx, floating[::1] xt,
                Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad):
    """Adjoint of im2row_into: overwrite dx with the sum of the row entries at each input position (one thread)."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t H_out = output_size(H, HH, stride, pad), W_out = output_size(W, WW, stride, pad)
    cdef Py_ssize_t n
    with nogil:
        for n in range(N):
            _row2im_image(&rows[n, 0, 0], &xt[0], C, H, W, HH, WW, stride, pad, H_out, W_out)
            _transpose(&xt[0], &dx[n, 0, 0, 0], H * W, C, NULL)


def transpose_planes(const floating[:, :, ::1] src, floating[:, :, ::1] dst, const floating[::1] b=None):
    """dst[n, q, p] = src[n, p, q] (+ b[q] when b is given), one thread: a GEMM's (P, F) result to (F, P) and back."""
    cdef Py_ssize_t N = src.shape[0], A = src.shape[1], B = src.shape[2]
    cdef Py_ssize_t n
    cdef const floating* bias = &b[0] if b is not None else NULL
    with nogil:
        for n in range(N):
            _transpose(&src[n, 0, 0], &dst[n, 0, 0], A, B, bias)
