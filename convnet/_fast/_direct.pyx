# cython: language_level=3
"""Direct stride-1 convolution for layers with few channels: no im2col columns.

Each image is first copied into a zero-padded plane stack ``xp`` of shape
(channels, rows, row_width) whose rows hold whole vectors of outputs plus the
kernel's reach (``convnet.fast.conv_direct``), so the inner loops never test
for a row's end. A tap ``t`` of the kernel (channel, ky, kx) is an offset into
``xp``; taps past the real ones point at offset 0 and their results are dropped.

- forward (:func:`correlate`): a block of ``fb`` filters times two vectors of
  one output row is held in registers while every tap adds
  ``w[f, t] * xp[t + row + lane]``; dx is the same kernel on dout padded by
  ``kernel - 1 - pad`` with the filters flipped and their channel axes swapped;
- dw (:func:`filter_gradient`): 2 filters times 6 taps of ``sum over pixels
  dout * xp`` are held as vectors; the lanes past a row's end are masked (not
  multiplied by zero: an infinity there would make NaN). Or, with ``by_filters``,
  6 taps times two vectors of filters, on dout transposed to (pixels, filters):
  every lane holds a real pixel, for short rows.

The wrappers never validate: ``convnet.fast.conv_direct`` checks and
allocates, and each call works on images ``lo:hi`` on the calling thread,
without the GIL.
"""
cimport cython
from cython cimport floating
from libc.string cimport memset, memcpy

from convnet._fast._lowering cimport sum_planes, transpose_tiles_ld

cdef extern from *:
    """
    /* GCC and clang vector extensions (32-byte vectors: ymm with AVX2, xmm pairs on the SSE2 baseline) make the
       accumulators registers; other compilers get no direct convolution (DC_VECTORIZED 0, stubs). */
    #define DC_VBYTES 32
    #if defined(__GNUC__) || defined(__clang__)
    #define DC_VECTORIZED 1
    typedef float dc_vfloat __attribute__((vector_size(DC_VBYTES), aligned(4)));
    typedef double dc_vdouble __attribute__((vector_size(DC_VBYTES), aligned(8)));
    typedef int dc_mfloat __attribute__((vector_size(DC_VBYTES)));
    typedef long long dc_mdouble __attribute__((vector_size(DC_VBYTES)));
    #define DC_V(T) dc_v##T
    #define DC_M(T) dc_m##T

    /* Forward block: FB filters x 2 vectors of one output row, over ntaps taps. */
    #define DC_FORWARD(T, FB)                                                                              \\
    static void dc_forward_##T##_##FB(const T *restrict xp, Py_ssize_t Wpp, const Py_ssize_t *restrict off, Py_ssize_t ntaps, \\
                                      const T *restrict wt, const T *restrict bias, T *restrict y,         \\
                                      Py_ssize_t F, Py_ssize_t Ho, Py_ssize_t Wo)                          \\
    {                                                                                                     \\
        typedef DC_V(T) V;                                                                                \\
        enum { VL = sizeof(V) / sizeof(T), L = 2 * VL };                                                  \\
        for (Py_ssize_t fb = 0; fb < F; fb += FB) {                                                       \\
            const T *restrict wb = wt + (fb / FB) * ntaps * FB;                                           \\
            Py_ssize_t nf = F - fb < FB ? F - fb : FB;                                                    \\
            for (Py_ssize_t oy = 0; oy < Ho; oy++) {                                                      \\
                const T *restrict xrow = xp + oy * Wpp;                                                   \\
                for (Py_ssize_t ox0 = 0; ox0 < Wo; ox0 += L) {                                            \\
                    V a[FB], b[FB];                                                                       \\
                    for (int f = 0; f < FB; f++) { a[f] = (V){0} + bias[fb + f]; b[f] = a[f]; }           \\
                    for (Py_ssize_t t = 0; t < ntaps; t++) {                                              \\
                        const T *restrict xr = xrow + off[t] + ox0;                                       \\
                        V x0 = *(const V *)xr, x1 = *(const V *)(xr + VL);                                \\
                        const T *restrict wv = wb + t * FB;                                               \\
                        for (int f = 0; f < FB; f++) { a[f] += wv[f] * x0; b[f] += wv[f] * x1; }          \\
                    }                                                                                     \\
                    Py_ssize_t n = Wo - ox0 < L ? Wo - ox0 : L;                                           \\
                    for (Py_ssize_t f = 0; f < nf; f++) {                                                 \\
                        T *yr = y + ((fb + f) * Ho + oy) * Wo + ox0;                                      \\
                        if (n == L) { *(V *)yr = a[f]; *(V *)(yr + VL) = b[f]; }                          \\
                        else { T tmp[L]; memcpy(tmp, &a[f], sizeof(V)); memcpy(tmp + VL, &b[f], sizeof(V)); \\
                               memcpy(yr, tmp, n * sizeof(T)); }                                          \\
                    }                                                                                     \\
                }                                                                                         \\
            }                                                                                             \\
        }                                                                                                 \\
    }

    #define DC_DW_FB 2
    #define DC_DW_TB 6
    /* dw[f, t] += sum over nimg images' pixels of dy[f] * xp[t]; ntaps a multiple of DC_DW_TB. dy's rows
       are Wq >= Wo long, zero past Wo (a copy); the lanes of x past Wo are masked too (an infinity there
       times zero would make NaN). */
    #define DC_DW(T)                                                                                      \\
    static void dc_dw_##T(const T *restrict xp, Py_ssize_t Wpp, const Py_ssize_t *restrict off, Py_ssize_t ntaps, \\
                          Py_ssize_t xstride, const T *restrict dy, const T *restrict zeros, Py_ssize_t nimg, \\
                          Py_ssize_t F, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t Wq, T *restrict dw)       \\
    {                                                                                                     \\
        typedef DC_V(T) V;                                                                                \\
        typedef DC_M(T) M;                                                                                \\
        enum { L = sizeof(V) / sizeof(T) };                                                               \\
        Py_ssize_t full = Wo - Wo % L, plane = Ho * Wq;                                                   \\
        M mask;                                                                                           \\
        for (int l = 0; l < L; l++) mask[l] = l < Wo - full ? -1 : 0;                                     \\
        for (Py_ssize_t fb = 0; fb < F; fb += DC_DW_FB) {                                                 \\
            /* An odd F's last pass pairs its filter with a row of zeros. */                              \\
            const T *d0 = dy + fb * plane, *d1 = fb + 1 < F ? d0 + plane : zeros;                         \\
            Py_ssize_t s1 = fb + 1 < F ? Wq : 0, n1 = fb + 1 < F ? F * plane : 0;                         \\
            for (Py_ssize_t t0 = 0; t0 < ntaps; t0 += DC_DW_TB) {                                         \\
                V a[DC_DW_TB], b[DC_DW_TB];                                                               \\
                for (int t = 0; t < DC_DW_TB; t++) { a[t] = (V){0}; b[t] = (V){0}; }                      \\
                const Py_ssize_t *restrict o = off + t0;                                                  \\
                for (Py_ssize_t n = 0; n < nimg; n++)                                                     \\
                for (Py_ssize_t oy = 0; oy < Ho; oy++) {                                                  \\
                    const T *restrict xrow = xp + n * xstride + oy * Wpp;                                 \\
                    const T *restrict r0 = d0 + n * F * plane + oy * Wq, *restrict r1 = d1 + n * n1 + oy * s1; \\
                    Py_ssize_t ox0 = 0;                                                                   \\
                    for (; ox0 < full; ox0 += L) {                                                        \\
                        V e0 = *(const V *)(r0 + ox0), e1 = *(const V *)(r1 + ox0);                       \\
                        for (int t = 0; t < DC_DW_TB; t++) {                                              \\
                            V xv = *(const V *)(xrow + o[t] + ox0);                                       \\
                            a[t] += e0 * xv; b[t] += e1 * xv;                                             \\
                        }                                                                                 \\
                    }                                                                                     \\
                    if (ox0 < Wo) {                                                                       \\
                        V e0 = *(const V *)(r0 + ox0), e1 = *(const V *)(r1 + ox0);                       \\
                        for (int t = 0; t < DC_DW_TB; t++) {                                              \\
                            V xv = (V)((M)(*(const V *)(xrow + o[t] + ox0)) & mask);                      \\
                            a[t] += e0 * xv; b[t] += e1 * xv;                                             \\
                        }                                                                                 \\
                    }                                                                                     \\
                }                                                                                         \\
                for (int t = 0; t < DC_DW_TB; t++) {                                                      \\
                    T sa = 0, sb = 0;                                                                     \\
                    for (int l = 0; l < L; l++) { sa += a[t][l]; sb += b[t][l]; }                         \\
                    dw[fb * ntaps + t0 + t] += sa;                                                        \\
                    if (fb + 1 < F) dw[(fb + 1) * ntaps + t0 + t] += sb;                                  \\
                }                                                                                         \\
            }                                                                                             \\
        }                                                                                                 \\
    }

    /* The same sums with the filters in the lanes: dwT[t, f] += sum over nimg images' pixels of xp[t] * dT[p, f],
       dT (pixels, Fp) dout transposed, zero past F; Fp a multiple of two vectors. No lane of x past a row's end
       is read, so no mask: for short rows, whose vectors of pixels would be part empty. */
    #define DC_DWF(T)                                                                                     \
    static void dc_dwf_##T(const T *restrict xp, Py_ssize_t Wpp, const Py_ssize_t *restrict off, Py_ssize_t ntaps, \
                           Py_ssize_t xstride, const T *restrict dT, Py_ssize_t nimg, Py_ssize_t Fp,       \
                           Py_ssize_t Ho, Py_ssize_t Wo, T *restrict dwT)                                  \
    {                                                                                                     \
        typedef DC_V(T) V;                                                                                \
        enum { L = sizeof(V) / sizeof(T) };                                                               \
        for (Py_ssize_t t0 = 0; t0 < ntaps; t0 += DC_DW_TB) {                                             \
            const Py_ssize_t *restrict o = off + t0;                                                      \
            for (Py_ssize_t f0 = 0; f0 < Fp; f0 += 2 * L) {                                               \
                V a[DC_DW_TB], b[DC_DW_TB];                                                               \
                for (int t = 0; t < DC_DW_TB; t++) { a[t] = (V){0}; b[t] = (V){0}; }                      \
                const T *restrict d = dT + f0;                                                            \
                for (Py_ssize_t n = 0; n < nimg; n++)                                                     \
                for (Py_ssize_t oy = 0; oy < Ho; oy++) {                                                  \
                    const T *restrict xrow = xp + n * xstride + oy * Wpp;                                 \
                    for (Py_ssize_t ox = 0; ox < Wo; ox++, d += Fp) {                                     \
                        V d0 = *(const V *)d, d1 = *(const V *)(d + L);                                   \
                        for (int t = 0; t < DC_DW_TB; t++) {                                              \
                            T xv = xrow[o[t] + ox];                                                       \
                            a[t] += xv * d0; b[t] += xv * d1;                                             \
                        }                                                                                 \
                    }                                                                                     \
                }                                                                                         \
                for (int t = 0; t < DC_DW_TB; t++) {                                                      \
                    T *restrict w = dwT + (t0 + t) * Fp + f0;                                             \
                    for (int l = 0; l < L; l++) { w[l] += a[t][l]; w[L + l] += b[t][l]; }                 \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
    }

    DC_FORWARD(float, 1) DC_FORWARD(float, 2) DC_FORWARD(float, 3)
    DC_FORWARD(float, 4) DC_FORWARD(float, 5) DC_FORWARD(float, 6)
    DC_FORWARD(double, 1) DC_FORWARD(double, 2) DC_FORWARD(double, 3)
    DC_FORWARD(double, 4) DC_FORWARD(double, 5) DC_FORWARD(double, 6)
    DC_DW(float) DC_DW(double)
    DC_DWF(float) DC_DWF(double)
    #define DC_TABLE(T) {0, dc_forward_##T##_1, dc_forward_##T##_2, dc_forward_##T##_3, dc_forward_##T##_4, \\
                         dc_forward_##T##_5, dc_forward_##T##_6}
    #else
    #define DC_VECTORIZED 0
    #define DC_DW_TB 6
    #define DC_STUB(T) static void dc_stub_##T(const T *a, Py_ssize_t b, const Py_ssize_t *c, Py_ssize_t d, \\
        const T *e, const T *f, T *g, Py_ssize_t h, Py_ssize_t i, Py_ssize_t j) {}                          \\
        static void dc_dw_##T(const T *a, Py_ssize_t b, const Py_ssize_t *c, Py_ssize_t d, Py_ssize_t e,     \\
                          const T *f, const T *g, Py_ssize_t h, Py_ssize_t i, Py_ssize_t j, Py_ssize_t k,  \\
                          Py_ssize_t l, T *m) {}                                                     \
        static void dc_dwf_##T(const T *a, Py_ssize_t b, const Py_ssize_t *c, Py_ssize_t d, Py_ssize_t e,    \
                               const T *f, Py_ssize_t g, Py_ssize_t h, Py_ssize_t i, Py_ssize_t j, T *k) {}
    DC_STUB(float) DC_STUB(double)
    #define DC_TABLE(T) {0, dc_stub_##T, dc_stub_##T, dc_stub_##T, dc_stub_##T, dc_stub_##T, dc_stub_##T}
    #endif

    typedef void (*dc_forward_float_fn)(const float *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t, const float *,
                                        const float *, float *, Py_ssize_t, Py_ssize_t, Py_ssize_t);
    typedef void (*dc_forward_double_fn)(const double *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t, const double *,
                                         const double *, double *, Py_ssize_t, Py_ssize_t, Py_ssize_t);
    static const dc_forward_float_fn dc_forward_float[7] = DC_TABLE(float);
    static const dc_forward_double_fn dc_forward_double[7] = DC_TABLE(double);
    """
    int DC_VECTORIZED
    int DC_VBYTES
    int DC_DW_TB
    ctypedef void (*ffwd)(const float *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t, const float *, const float *, float *,
                          Py_ssize_t, Py_ssize_t, Py_ssize_t) noexcept nogil
    ctypedef void (*dfwd)(const double *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t, const double *, const double *, double *,
                          Py_ssize_t, Py_ssize_t, Py_ssize_t) noexcept nogil
    ffwd *dc_forward_float
    dfwd *dc_forward_double
    void dc_dw_float(const float *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t, Py_ssize_t, const float *,
                     const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, float *) noexcept nogil
    void dc_dw_double(const double *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t, Py_ssize_t, const double *,
                      const double *, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                      double *) noexcept nogil
    void dc_dwf_float(const float *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t, Py_ssize_t, const float *,
                      Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, float *) noexcept nogil
    void dc_dwf_double(const double *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t, Py_ssize_t, const double *,
                       Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, double *) noexcept nogil

# Whether this build has the kernels (the stubs of a compiler without vector extensions do nothing).
VECTORIZED = bool(DC_VECTORIZED)
# dw's taps per pass: the offsets it gets come in multiples of this.
DW_TAPS = DC_DW_TB


def lanes(Py_ssize_t itemsize):
    """Outputs of a row the forward kernel computes at once: two vectors."""
    return 2 * DC_VBYTES // itemsize


def dw_lanes(Py_ssize_t itemsize):
    """Outputs of a row dw reads at once: one vector (dout's rows are copied in multiples of it)."""
    return DC_VBYTES // itemsize


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _pad_image(const floating *src, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, floating *dst,
                     Py_ssize_t Hp, Py_ssize_t Wpp, Py_ssize_t top, Py_ssize_t left) noexcept nogil:
    # The whole stack is zeroed: the kernels read the margins and the rows' tails.
    cdef Py_ssize_t c, i
    memset(dst, 0, C * Hp * Wpp * sizeof(floating))
    for c in range(C):
        for i in range(H):
            memcpy(dst + (c * Hp + top + i) * Wpp + left, src + (c * H + i) * W, W * sizeof(floating))


@cython.boundscheck(False)
@cython.wraparound(False)
def correlate(const floating[:, :, :, ::1] x, const floating[::1] wt, const floating[::1] bias,
              floating[:, :, :, ::1] out, floating[::1] scratch, const Py_ssize_t[::1] off,
              Py_ssize_t fb, Py_ssize_t Hp, Py_ssize_t Wpp, Py_ssize_t top, Py_ssize_t left,
              Py_ssize_t lo, Py_ssize_t hi):
    """out[n] = bias + the correlation of x[n], padded by (top, left) into scratch (C, Hp, Wpp), with the
    blocked filters wt (F/fb blocks, ntaps, fb), for n in lo:hi. ``off`` holds the taps' offsets in scratch."""
    cdef Py_ssize_t n, ntaps = off.shape[0]
    cdef Py_ssize_t F = out.shape[1], Ho = out.shape[2], Wo = out.shape[3]
    with nogil:
        for n in range(lo, hi):
            _pad_image(&x[n, 0, 0, 0], x.shape[1], x.shape[2], x.shape[3], &scratch[0], Hp, Wpp, top, left)
            if floating is float:
                dc_forward_float[fb](&scratch[0], Wpp, &off[0], ntaps, &wt[0], &bias[0], &out[n, 0, 0, 0],
                                     F, Ho, Wo)
            else:
                dc_forward_double[fb](&scratch[0], Wpp, &off[0], ntaps, &wt[0], &bias[0], &out[n, 0, 0, 0],
                                      F, Ho, Wo)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _pad_rows(const floating *src, Py_ssize_t rows, Py_ssize_t W, floating *dst,
                    Py_ssize_t Wq) noexcept nogil:
    # Rows of W copied to rows of Wq with zeros after: dw reads dout's rows in whole vectors.
    cdef Py_ssize_t i
    for i in range(rows):
        memcpy(dst + i * Wq, src + i * W, W * sizeof(floating))
        memset(dst + i * Wq + W, 0, (Wq - W) * sizeof(floating))


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _transpose_planes(const floating *src, Py_ssize_t m, Py_ssize_t F, Py_ssize_t P, floating *dst,
                            Py_ssize_t Fp) noexcept nogil:
    # dst[n*P + p, f] = src[n, f, p], zero for F <= f < Fp: each pixel's filters side by side, tile by tile
    # (element by element, each write lands Fp elements past the last: 3x slower on a 32x32x32 image).
    cdef Py_ssize_t n, p
    if F < Fp:
        for p in range(m * P):
            memset(dst + p * Fp + F, 0, (Fp - F) * sizeof(floating))
    for n in range(m):
        transpose_tiles_ld(src + n * F * P, dst + n * P * Fp, F, P, Fp, <floating*>NULL)


@cython.boundscheck(False)
@cython.wraparound(False)
def filter_gradient(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dout, floating[:, ::1] dw,
                    double[::1] db, floating[::1] scratch, floating[::1] dscratch, const floating[::1] zeros,
                    const Py_ssize_t[::1] off, Py_ssize_t Hp, Py_ssize_t Wpp, Py_ssize_t Wq, Py_ssize_t pad,
                    Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t nb, bint by_filters=False):
    """dw (F, ntaps) += sum over images lo:hi and output pixels of dout[n, f] * x[n] padded at tap t;
    db (F,) += the sum of dout[n, f] over the same images and pixels (in double).

    nb images at a time are padded into scratch (nb, C, Hp, Wpp) and their dout into dscratch
    (nb, F, H_out, Wq), rows zero past W_out; each pass over the taps sums them all before its
    reduction. ``off`` has a multiple of DW_TAPS taps; zeros holds Wq zeros.

    ``by_filters``: the filters in the vector lanes instead; dw is then dw^T (ntaps, Fp), Fp a
    multiple of two vectors (:func:`dw_lanes`), and dout is transposed into dscratch
    (nb*H_out*W_out, Fp), zero past F (Wq and zeros unused)."""
    cdef Py_ssize_t n0, n, m, ntaps = off.shape[0], C = x.shape[1]
    cdef Py_ssize_t F = dout.shape[1], Ho = dout.shape[2], Wo = dout.shape[3], S = C * Hp * Wpp
    cdef Py_ssize_t Fp = dw.shape[1]
    n0 = lo
    with nogil:
        while n0 < hi:
            m = min(nb, hi - n0)
            sum_planes(&dout[n0, 0, 0, 0], m, F, Ho * Wo, &db[0])
            for n in range(m):
                _pad_image(&x[n0 + n, 0, 0, 0], C, x.shape[2], x.shape[3], &scratch[n * S], Hp, Wpp, pad, pad)
            if by_filters:
                _transpose_planes(&dout[n0, 0, 0, 0], m, F, Ho * Wo, &dscratch[0], Fp)
                if floating is float:
                    dc_dwf_float(&scratch[0], Wpp, &off[0], ntaps, S, &dscratch[0], m, Fp, Ho, Wo, &dw[0, 0])
                else:
                    dc_dwf_double(&scratch[0], Wpp, &off[0], ntaps, S, &dscratch[0], m, Fp, Ho, Wo, &dw[0, 0])
            else:
                _pad_rows(&dout[n0, 0, 0, 0], m * F * Ho, Wo, &dscratch[0], Wq)
                if floating is float:
                    dc_dw_float(&scratch[0], Wpp, &off[0], ntaps, S, &dscratch[0], &zeros[0], m, F, Ho, Wo, Wq,
                                &dw[0, 0])
                else:
                    dc_dw_double(&scratch[0], Wpp, &off[0], ntaps, S, &dscratch[0], &zeros[0], m, F, Ho, Wo, Wq,
                                 &dw[0, 0])
            n0 += m
