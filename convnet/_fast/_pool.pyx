# cython: language_level=3
"""Max and average pooling kernels (private; call them through convnet.fast).

Inputs are viewed as ``N*C`` planes. ``nthreads`` threads split the planes, so
each thread owns the writes to its planes and overlapping windows accumulate
without races. Each plane is handled by a plain ``cdef`` function on raw
pointers: gcc optimises the same loops written inside the ``prange`` body
poorly (OpenMP private variables).

These kernels do not validate: the caller guarantees C-contiguous arrays of one
dtype, outputs of the ``output_size`` of ``_window.pxd`` (>= 1), ph <= H + 2*pad,
2*pad <= min(ph, pw) (so every window holds a real element), and for the
backward pass 0 <= argmax < H*W.
"""
import numpy as np
from cython.parallel import prange, threadid
from cython cimport floating
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from convnet._fast._window cimport tap_span, window_span


# Output rows shorter than this take _maxpool_block_2x2: the vector loop of _maxpool_plane_2x2 runs 8
# lanes, and its scalar remainder branches on every compare (benchmarks/README.md: short rows).
DEF SHORT_ROW = 8
# Bytes of input per block of planes in _maxpool_block_2x2: the block and its scratch stay in L1.
DEF BLOCK_BYTES = 8192


cdef inline void _maxpool_plane_2x2(const floating* x, floating* out, int* argmax,
                                    Py_ssize_t W, Py_ssize_t H_out, Py_ssize_t W_out) noexcept nogil:
    # The common 2x2/2 window without padding or NaN: constant offsets and selects in place of the
    # window loop, which gcc turns into vector blends (the first maximum in row-major order, strict >).
    cdef Py_ssize_t i, j
    cdef const floating* r0
    cdef const floating* r1
    cdef floating best, v
    cdef int k, base
    for i in range(H_out):
        r0 = x + 2 * i * W
        r1 = r0 + W
        base = <int>(2 * i * W)
        for j in range(W_out):
            best = r0[2 * j]
            k = 0
            v = r0[2 * j + 1]
            if v > best:
                best = v
                k = 1
            v = r1[2 * j]
            if v > best:
                best = v
                k = <int>W
            v = r1[2 * j + 1]
            if v > best:
                best = v
                k = <int>W + 1
            out[i * W_out + j] = best
            argmax[i * W_out + j] = base + 2 * <int>j + k


cdef inline void _maxpool_plane(const floating* x, floating* out, int* argmax,
                                Py_ssize_t H, Py_ssize_t W, Py_ssize_t H_out, Py_ssize_t W_out,
                                Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    cdef Py_ssize_t i, j, h, w, hs, he, ws, we, best_i, q
    cdef floating best, v
    cdef int has_nan = 0
    # A NaN test inside the window loop slows every plane: test the plane once, vectorised,
    # and take the NaN-aware loop only for planes that hold a NaN.
    for q in range(H * W):
        has_nan = has_nan | (x[q] != x[q])
    if not has_nan and ph == 2 and pw == 2 and stride == 2 and pad == 0:
        _maxpool_plane_2x2(x, out, argmax, W, H_out, W_out)
        return
    for i in range(H_out):
        window_span(i, ph, stride, pad, H, &hs, &he)
        for j in range(W_out):
            window_span(j, pw, stride, pad, W, &ws, &we)
            best = x[hs * W + ws]
            best_i = hs * W + ws
            if has_nan:
                for h in range(hs, he):
                    for w in range(ws, we):
                        v = x[h * W + w]
                        # The first NaN wins, as numpy's argmax; it stays since nothing beats it.
                        if (v > best or v != v) and best == best:
                            best = v
                            best_i = h * W + w
            else:
                for h in range(hs, he):
                    for w in range(ws, we):
                        v = x[h * W + w]
                        # Strict '>': the first maximum in row-major order wins (PyTorch).
                        if v > best:
                            best = v
                            best_i = h * W + w
            out[i * W_out + j] = best
            argmax[i * W_out + j] = <int>best_i


cdef inline int _maxpool_block_2x2(const floating* x, floating* out, int* argmax, Py_ssize_t planes,
                                   Py_ssize_t H, Py_ssize_t W, floating* h, int* kh) noexcept nogil:
    # 2x2/2 without padding on NaN-free planes of even H and W with short rows: on random data the
    # per-row loop mispredicts a branch per compare (1.1-1.7 ns per element on 8x8 maps). Here every loop
    # runs over the whole block and vectorises: the horizontal pairs of every row, then the vertical
    # pairs of every two consecutive rows in place, then the even rows' results copied out.
    # h and kh hold planes*H*W/2 elements. The first maximum in row-major order wins (strict >).
    # Returns whether the block holds a NaN (then out and argmax are not written): the first pass
    # looks for one as it reads x, so no separate pass over the block does.
    cdef Py_ssize_t W_out = W // 2, H_out = H // 2
    cdef Py_ssize_t n = planes * H * W_out, q, r, j
    cdef floating a, b
    cdef int c, Wi = <int>W, base, has_nan = 0
    for q in range(n):
        a = x[2 * q]
        b = x[2 * q + 1]
        c = b > a
        h[q] = b if c else a
        kh[q] = c
        has_nan = has_nan | (a != a) | (b != b)
    if has_nan:
        return 1
    # Row pairs (2i, 2i+1) only are read below; q + W_out < n, and q runs forward, so h[q + W_out] is unwritten.
    for q in range(n - W_out):
        a = h[q]
        b = h[q + W_out]
        c = b > a
        h[q] = b if c else a
        kh[q] = (Wi + kh[q + W_out]) if c else kh[q]
    for r in range(planes * H_out):
        base = <int>(2 * (r % H_out) * W)
        for j in range(W_out):
            out[r * W_out + j] = h[2 * r * W_out + j]
            argmax[r * W_out + j] = base + 2 * <int>j + kh[2 * r * W_out + j]
    return 0


cdef inline void _maxpool_planes_2x2(const floating* x, floating* out, int* argmax, Py_ssize_t planes,
                                     Py_ssize_t H, Py_ssize_t W) noexcept nogil:
    # Blocks of planes for _maxpool_block_2x2; a block holding a NaN goes plane by plane.
    cdef Py_ssize_t per = max(1, BLOCK_BYTES // (H * W * sizeof(floating)))
    cdef Py_ssize_t p0, m, q, HW = H * W, Q = (H // 2) * (W // 2)
    cdef floating* h = <floating*>malloc(per * HW // 2 * sizeof(floating))
    cdef int* kh = <int*>malloc(per * HW // 2 * sizeof(int))
    if h == NULL or kh == NULL:  # no scratch: the plane loop needs none
        free(h)
        free(kh)
        for p0 in range(planes):
            _maxpool_plane(x + p0 * HW, out + p0 * Q, argmax + p0 * Q, H, W, H // 2, W // 2, 2, 2, 2, 0)
        return
    p0 = 0
    while p0 < planes:
        m = min(per, planes - p0)
        if _maxpool_block_2x2(x + p0 * HW, out + p0 * Q, argmax + p0 * Q, m, H, W, h, kh):
            for q in range(p0, p0 + m):
                _maxpool_plane(x + q * HW, out + q * Q, argmax + q * Q, H, W, H // 2, W // 2, 2, 2, 2, 0)
        p0 += m
    free(h)
    free(kh)


def maxpool_forward(const floating[:, :, ::1] x, floating[:, :, ::1] out, int[:, :, ::1] argmax,
                    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t stride, Py_ssize_t pad, int nthreads=1):
    """out = max over each window's real elements; argmax = flat index h*W + w of the first maximum.

    Row-major scan, strict ``>``: the first maximum wins (PyTorch). A NaN wins
    over any number (the first NaN of the window, as numpy's argmax).
    """
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t H_out = out.shape[1], W_out = out.shape[2]
    cdef Py_ssize_t p, t, lo, hi
    if ph == 2 and pw == 2 and stride == 2 and pad == 0 and H % 2 == 0 and W % 2 == 0 and W_out < SHORT_ROW:
        with nogil:
            if nthreads == 1:  # an OpenMP region costs about 1 us even on one thread
                _maxpool_planes_2x2(&x[0, 0, 0], &out[0, 0, 0], &argmax[0, 0, 0], P, H, W)
            else:
                for t in prange(nthreads, schedule="static", num_threads=nthreads):
                    lo = t * P // nthreads
                    hi = (t + 1) * P // nthreads
                    if hi > lo:
                        _maxpool_planes_2x2(&x[lo, 0, 0], &out[lo, 0, 0], &argmax[lo, 0, 0], hi - lo, H, W)
        return
    with nogil:
        if nthreads == 1:
            for p in range(P):
                _maxpool_plane(&x[p, 0, 0], &out[p, 0, 0], &argmax[p, 0, 0],
                               H, W, H_out, W_out, ph, pw, stride, pad)
        else:
            for p in prange(P, schedule="static", num_threads=nthreads):
                _maxpool_plane(&x[p, 0, 0], &out[p, 0, 0], &argmax[p, 0, 0],
                               H, W, H_out, W_out, ph, pw, stride, pad)


cdef inline void _maxpool_back_plane(const floating* dout, const int* argmax, floating* dx,
                                     Py_ssize_t Q, Py_ssize_t HW) noexcept nogil:
    cdef Py_ssize_t q
    memset(dx, 0, HW * sizeof(floating))
    for q in range(Q):
        dx[argmax[q]] += dout[q]


def maxpool_backward(const floating[:, ::1] dout, const int[:, ::1] argmax, floating[:, ::1] dx,
                     int nthreads=1):
    """Overwrite dx: zero each plane just before adding each window's gradient at its argmax
    (plane-flat index); faster than np.zeros' lazily zeroed pages."""
    cdef Py_ssize_t P = dx.shape[0], HW = dx.shape[1], Q = dout.shape[1]
    cdef Py_ssize_t p
    with nogil:
        if nthreads == 1:
            for p in range(P):
                _maxpool_back_plane(&dout[p, 0], &argmax[p, 0], &dx[p, 0], Q, HW)
        else:
            for p in prange(P, schedule="static", num_threads=nthreads):
                _maxpool_back_plane(&dout[p, 0], &argmax[p, 0], &dx[p, 0], Q, HW)


def index_bound(const int[::1] idx):
    """The largest of ``idx`` read as unsigned 32-bit values, 0 if it is empty: a negative index reads as
    2**31 or more, so one comparison of the result checks both ends of a range [0, n)."""
    cdef Py_ssize_t i, n = idx.shape[0]
    cdef unsigned int m = 0, v
    with nogil:
        for i in range(n):
            v = <unsigned int>idx[i]
            m = v if v > m else m
    return m


cdef inline void _avgpool_plane(const floating* x, floating* out, floating* rs,
                                Py_ssize_t H, Py_ssize_t W, Py_ssize_t H_out, Py_ssize_t W_out,
                                Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    # rs: scratch of H*W_out elements.
    cdef Py_ssize_t i, j, h, w, kh, hs, he, ws, we
    cdef floating acc
    cdef floating scale = 1.0 / (ph * pw)
    cdef const floating* r0
    cdef const floating* r1
    cdef floating* o
    if ph == 2 and pw == 2 and stride == 2 and pad == 0:
        # The common 2x2/2 window with constant offsets: gcc vectorises this loop.
        for i in range(H_out):
            r0 = x + 2 * i * W
            r1 = r0 + W
            for j in range(W_out):
                out[i * W_out + j] = (r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1]) * scale
        return
    if pad == 0 and pw == W and (stride >= ph or H_out == 1):
        # Full-width windows read ph*W contiguous elements each (a global pool takes _global_pool instead).
        for i in range(H_out):
            out[i] = _contiguous_sum(x + i * stride * W, ph * W) * scale
        return
    if (stride >= ph or H_out == 1) and (stride >= pw or W_out == 1):
        # Windows that do not overlap: each element is read at most once, summed directly.
        for i in range(H_out):
            window_span(i, ph, stride, pad, H, &hs, &he)
            for j in range(W_out):
                window_span(j, pw, stride, pad, W, &ws, &we)
                acc = 0
                for h in range(hs, he):
                    for w in range(ws, we):
                        acc = acc + x[h * W + w]
                out[i * W_out + j] = acc * scale
        return
    # Overlapping windows, separable: rs[h, j] sums row h over window column j, then out[i, j] sums
    # rs over window row i (ph + pw additions per output instead of ph * pw). Each pass runs over
    # contiguous runs of j per window tap, which gcc vectorises.
    for h in range(H):
        _row_window_sums(x + h * W, rs + h * W_out, W, W_out, pw, stride, pad)
    for i in range(H_out):
        o = out + i * W_out
        for j in range(W_out):
            o[j] = 0
        for kh in range(ph):
            h = i * stride - pad + kh
            if 0 <= h < H:
                r0 = rs + h * W_out
                for j in range(W_out):
                    o[j] += r0[j]
        for j in range(W_out):
            o[j] *= scale


cdef inline floating _contiguous_sum(const floating* x, Py_ssize_t n) noexcept nogil:
    # Sixteen independent partial sums in an array, which gcc keeps in vector registers (one add per
    # vector of x; eight scalar sums ran at 0.6 cycles per element), then a pairwise reduction.
    cdef floating acc[16]
    cdef floating s = 0
    cdef Py_ssize_t k = 0, t
    for t in range(16):
        acc[t] = 0
    while k + 16 <= n:
        for t in range(16):
            acc[t] += x[k + t]
        k += 16
    for t in range(8):
        acc[t] += acc[t + 8]
    for t in range(4):
        acc[t] += acc[t + 4]
    s = (acc[0] + acc[1]) + (acc[2] + acc[3])
    while k < n:
        s += x[k]
        k += 1
    return s


cdef inline void _row_window_sums(const floating* row, floating* r, Py_ssize_t W, Py_ssize_t W_out, Py_ssize_t pw,
                                  Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    # r[j] = sum of row over window j's real columns.
    cdef Py_ssize_t j, kw, jlo, jhi
    cdef const floating* src
    for j in range(W_out):
        r[j] = 0
    for kw in range(pw):
        jlo, jhi = tap_span(kw, stride, pad, W, W_out)
        src = row + jlo * stride - pad + kw
        if stride == 1:
            for j in range(jhi - jlo):
                r[jlo + j] += src[j]
        else:
            for j in range(jhi - jlo):
                r[jlo + j] += src[j * stride]


cdef inline void _row_window_spread(const floating* r, floating* row, Py_ssize_t W, Py_ssize_t W_out,
                                    Py_ssize_t pw, Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    # The adjoint of _row_window_sums: row (overwritten) gets r[j] at every real column of window j.
    cdef Py_ssize_t j, kw, jlo, jhi
    cdef floating* dst
    memset(row, 0, W * sizeof(floating))
    for kw in range(pw):
        jlo, jhi = tap_span(kw, stride, pad, W, W_out)
        dst = row + jlo * stride - pad + kw
        if stride == 1:
            for j in range(jhi - jlo):
                dst[j] += r[jlo + j]
        else:
            for j in range(jhi - jlo):
                dst[j * stride] += r[jlo + j]


def avgpool_forward(const floating[:, :, ::1] x, floating[:, :, ::1] out,
                    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t stride, Py_ssize_t pad, int nthreads=1):
    """out = sum of each window's real elements / (ph*pw): zero padding counts in the divisor."""
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t H_out = out.shape[1], W_out = out.shape[2]
    cdef Py_ssize_t p
    if ph == H and pw == W and pad == 0:
        with nogil:
            _global_pool(&x[0, 0, 0], &out[0, 0, 0], P, H * W, False, nthreads)
        return
    cdef floating[:, ::1] scratch = _scratch(x[0, 0, 0], nthreads, H * W_out)
    with nogil:
        if nthreads == 1:
            for p in range(P):
                _avgpool_plane(&x[p, 0, 0], &out[p, 0, 0], &scratch[0, 0], H, W, H_out, W_out,
                               ph, pw, stride, pad)
        else:
            for p in prange(P, schedule="static", num_threads=nthreads):
                _avgpool_plane(&x[p, 0, 0], &out[p, 0, 0], &scratch[threadid(), 0], H, W, H_out, W_out,
                               ph, pw, stride, pad)


cdef inline void _global_planes(const floating* src, floating* dst, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t n,
                                bint spread) noexcept nogil:
    # Planes lo:hi of a global average pool: dst[p] = the mean of plane p's n contiguous elements, or
    # (spread) its adjoint, every element of plane p of dst = src[p] / n.
    cdef floating scale = 1.0 / n
    cdef floating g
    cdef floating* row
    cdef Py_ssize_t p, k
    for p in range(lo, hi):
        if spread:
            g = src[p] * scale
            row = dst + p * n
            for k in range(n):
                row[k] = g
        else:
            dst[p] = _contiguous_sum(src + p * n, n) * scale


cdef void _global_pool(const floating* src, floating* dst, Py_ssize_t P, Py_ssize_t n, bint spread,
                       int nthreads) noexcept nogil:
    # A global pool over P planes, the planes split in nthreads blocks. Its own loop: the general kernel's
    # per-plane dispatch costs as much as the sums on 8x8 planes.
    cdef Py_ssize_t t
    if nthreads == 1:
        _global_planes(src, dst, 0, P, n, spread)
        return
    for t in prange(nthreads, schedule="static", num_threads=nthreads):
        _global_planes(src, dst, t * P // nthreads, (t + 1) * P // nthreads, n, spread)


cdef _scratch(floating like, int nthreads, Py_ssize_t n):
    # One row of n elements per thread, for the separable average pool's row sums.
    return np.empty((max(nthreads, 1), max(n, 1)), dtype=np.float32 if floating is float else np.float64)


cdef inline void _avgpool_back_plane(const floating* dout, floating* dx, floating* drs,
                                     Py_ssize_t H, Py_ssize_t W, Py_ssize_t H_out, Py_ssize_t W_out,
                                     Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t stride,
                                     Py_ssize_t pad) noexcept nogil:
    # drs: scratch of H*W_out elements.
    cdef Py_ssize_t i, j, h, w, kh, kw, hs, he, ws, we
    cdef const floating* d
    cdef floating g
    cdef floating scale = 1.0 / (ph * pw)
    cdef floating* d0
    cdef floating* d1
    if ph == 2 and pw == 2 and stride == 2 and pad == 0:
        # The common 2x2/2 window: constant offsets, one write per element.
        for i in range(H_out):
            d0 = dx + 2 * i * W
            d1 = d0 + W
            for j in range(W_out):
                g = dout[i * W_out + j] * scale
                d0[2 * j] = g
                d0[2 * j + 1] = g
                d1[2 * j] = g
                d1[2 * j + 1] = g
            for w in range(2 * W_out, W):
                d0[w] = 0
                d1[w] = 0
        if H > 2 * H_out:
            memset(dx + 2 * H_out * W, 0, (H - 2 * H_out) * W * sizeof(floating))
        return
    if stride == ph and stride == pw and pad == 0:
        # Windows tile the input: write each element once, zero the uncovered border.
        for i in range(H_out):
            for kh in range(ph):
                h = i * stride + kh
                for j in range(W_out):
                    g = dout[i * W_out + j] * scale
                    for kw in range(pw):
                        dx[h * W + j * stride + kw] = g
                for w in range(W_out * stride, W):
                    dx[h * W + w] = 0
        for h in range(H_out * stride, H):
            for w in range(W):
                dx[h * W + w] = 0
        return
    if pad == 0 and pw == W and (stride >= ph or H_out == 1):
        # Full-width windows: each fills ph*W contiguous elements; only the rows no window covers are zeroed.
        h = 0
        for i in range(H_out):
            hs = i * stride
            if hs > h:
                memset(dx + h * W, 0, (hs - h) * W * sizeof(floating))
            g = dout[i] * scale
            d0 = dx + hs * W
            for w in range(ph * W):
                d0[w] = g
            h = hs + ph
        if h < H:
            memset(dx + h * W, 0, (H - h) * W * sizeof(floating))
        return
    if (stride >= ph or H_out == 1) and (stride >= pw or W_out == 1):
        # Windows that do not overlap: each element receives from at most one window.
        memset(dx, 0, H * W * sizeof(floating))
        for i in range(H_out):
            window_span(i, ph, stride, pad, H, &hs, &he)
            for j in range(W_out):
                window_span(j, pw, stride, pad, W, &ws, &we)
                g = dout[i * W_out + j] * scale
                for h in range(hs, he):
                    for w in range(ws, we):
                        dx[h * W + w] = g
        return
    # Overlapping windows, separable, the adjoint of the forward pass: drs[h, j] gathers dout over the window rows
    # that hold h, then each row of dx gets drs spread over the window columns.
    memset(drs, 0, H * W_out * sizeof(floating))
    for i in range(H_out):
        d = dout + i * W_out
        for kh in range(ph):
            h = i * stride - pad + kh
            if 0 <= h < H:
                for j in range(W_out):
                    drs[h * W_out + j] += d[j] * scale
    for h in range(H):
        _row_window_spread(drs + h * W_out, dx + h * W, W, W_out, pw, stride, pad)


def avgpool_backward(const floating[:, :, ::1] dout, floating[:, :, ::1] dx,
                     Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t stride, Py_ssize_t pad, int nthreads=1):
    """Spread dout / (ph*pw) over each window's real elements; dx is fully overwritten."""
    cdef Py_ssize_t P = dx.shape[0], H = dx.shape[1], W = dx.shape[2]
    cdef Py_ssize_t H_out = dout.shape[1], W_out = dout.shape[2]
    cdef Py_ssize_t p
    if ph == H and pw == W and pad == 0:
        with nogil:
            _global_pool(&dout[0, 0, 0], &dx[0, 0, 0], P, H * W, True, nthreads)
        return
    cdef floating[:, ::1] scratch = _scratch(dout[0, 0, 0], nthreads, H * W_out)
    with nogil:
        if nthreads == 1:
            for p in range(P):
                _avgpool_back_plane(&dout[p, 0, 0], &dx[p, 0, 0], &scratch[0, 0], H, W, H_out, W_out,
                                    ph, pw, stride, pad)
        else:
            for p in prange(P, schedule="static", num_threads=nthreads):
                _avgpool_back_plane(&dout[p, 0, 0], &dx[p, 0, 0], &scratch[threadid(), 0], H, W, H_out, W_out,
                                    ph, pw, stride, pad)
