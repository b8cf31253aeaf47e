# The im2col / im2row loops on raw pointers, shared by the public kernels (_im2col.pyx; the direct convolution's
# dw pass takes the transpose and the plane sums) and the batch-part pipelines that call BLAS themselves
# (_conv_part.pyx). Inline: each compiles into its caller, built for its CPU variant. Layouts and the caller's
# guarantees: _im2col.pyx's docstring. None of them validates.
from cython cimport floating
from libc.string cimport memcpy, memset

from convnet._fast._window cimport tap_span, window_span

# A transpose goes tile by tile, TILE x TILE: the tile's source rows stay in L1 even when they lie 4 KiB apart
# (a 32x32 float32 plane), which map to one cache set, and its destination rows too.
cdef enum:
    TILE = 8


cdef inline void im2col_row(const floating* x, floating* row, Py_ssize_t N, Py_ssize_t C,
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


cdef inline void col2im_plane(const floating* cols, floating* dx, Py_ssize_t N, Py_ssize_t n,
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


cdef inline void bias_transpose_chunk(const floating* res, const floating* b, floating* out, Py_ssize_t F,
                                      Py_ssize_t N, Py_ssize_t P) noexcept nogil:
    # out[n, f, p] = res[f, n, p] + b[f]: a GEMM result (F, N, P) to NCHW, the bias added on the way.
    cdef Py_ssize_t n, f, p
    cdef const floating* src
    cdef floating* dst
    cdef floating bf
    for n in range(N):
        for f in range(F):
            src = res + (f * N + n) * P
            dst = out + (n * F + f) * P
            bf = b[f]
            for p in range(P):
                dst[p] = src[p] + bf


cdef inline void sum_planes(const floating* src, Py_ssize_t m, Py_ssize_t F, Py_ssize_t P,
                            double* db) noexcept nogil:
    # db[f] += the sum of src[n, f, :] over m images of F planes of P, in double, by 8 partial sums (a vector's
    # lanes: one running sum is bound by the adds' latency).
    cdef Py_ssize_t n, f, p, k, body = P - P % 8
    cdef double part[8]
    cdef double acc
    cdef const floating* r
    for n in range(m):
        for f in range(F):
            r = src + (n * F + f) * P
            for k in range(8):
                part[k] = 0
            for p in range(0, body, 8):
                for k in range(8):
                    part[k] += r[p + k]
            acc = 0
            for p in range(body, P):
                acc += r[p]
            for k in range(8):
                acc += part[k]
            db[f] += acc


cdef inline void transpose_tiles(const floating* s, floating* d, Py_ssize_t A, Py_ssize_t B,
                                 const floating* bias) noexcept nogil:
    # d[q*A + a] = s[a*B + q] (+ bias[q] unless bias is NULL).
    transpose_tiles_ld(s, d, A, B, A, bias)


cdef inline void transpose_tiles_ld(const floating* s, floating* d, Py_ssize_t A, Py_ssize_t B, Py_ssize_t ld,
                                    const floating* bias) noexcept nogil:
    # d[q*ld + a] = s[a*B + q] (+ bias[q] unless bias is NULL), ld >= A: rows of d longer than A keep their tails.
    cdef Py_ssize_t a0, q0, a, q, a1, q1
    for a0 in range(0, A, 8):  # 8: TILE (range needs a literal step)
        a1 = a0 + TILE if a0 + TILE < A else A
        for q0 in range(0, B, 8):
            q1 = q0 + TILE if q0 + TILE < B else B
            for q in range(q0, q1):
                if bias != NULL:
                    for a in range(a0, a1):
                        d[q * ld + a] = s[a * B + q] + bias[q]
                else:
                    for a in range(a0, a1):
                        d[q * ld + a] = s[a * B + q]


# im2row's rows[n, i*W_out + j, (kh*WW + kw)*C + c] = xpad[n, c, i*stride + kh, j*stride + kw] go one image at a
# time through a channels-last copy xt (H*W*C elements): the taps kw of one kh are then one contiguous run of
# C*(taps in range) elements, whatever the stride.
cdef inline void im2row_image(const floating* xt, floating* rows, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
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


cdef inline void row2im_image(const floating* rows, floating* xt, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
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
