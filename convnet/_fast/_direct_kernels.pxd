# cython: language_level=3
"""The direct convolution's register-blocked kernels (C, GCC/clang vector extensions), shared by ``_direct.pyx``
(images on the calling thread) and ``_conv_part.pyx`` (one image's rows and taps shared with its worker).

Layouts as ``_direct.pyx`` describes. Every module that cimports this file compiles its own static copy.
"""
from cython cimport floating
from libc.string cimport memcpy, memset

from convnet._fast._lowering cimport transpose_tiles_ld

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

    /* Forward block: FB filters x 2 vectors of one output row, over ntaps taps; output rows oy0:oy1 of Ho. */
    #define DC_FORWARD(T, FB)                                                                              \\
    static void dc_forward_##T##_##FB(const T *restrict xp, Py_ssize_t Wpp, const Py_ssize_t *restrict off, Py_ssize_t ntaps, \\
                                      const T *restrict wt, const T *restrict bias, T *restrict y,         \\
                                      Py_ssize_t F, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t oy0, Py_ssize_t oy1) \\
    {                                                                                                     \\
        typedef DC_V(T) V;                                                                                \\
        enum { VL = sizeof(V) / sizeof(T), L = 2 * VL };                                                  \\
        for (Py_ssize_t fb = 0; fb < F; fb += FB) {                                                       \\
            const T *restrict wb = wt + (fb / FB) * ntaps * FB;                                           \\
            Py_ssize_t nf = F - fb < FB ? F - fb : FB;                                                    \\
            for (Py_ssize_t oy = oy0; oy < oy1; oy++) {                                                  \\
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
    /* dw[f, t] (rows ldw apart) += sum over nimg images' pixels of dy[f] * xp[t]; ntaps a multiple of DC_DW_TB. dy's rows
       are Wq >= Wo long, zero past Wo (a copy); the lanes of x past Wo are masked too (an infinity there
       times zero would make NaN). */
    #define DC_DW(T)                                                                                      \\
    static void dc_dw_##T(const T *restrict xp, Py_ssize_t Wpp, const Py_ssize_t *restrict off, Py_ssize_t ntaps, \\
                          Py_ssize_t xstride, const T *restrict dy, const T *restrict zeros, Py_ssize_t nimg, \\
                          Py_ssize_t F, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t Wq, T *restrict dw,       \\
                          Py_ssize_t ldw)                                                                      \\
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
                    dw[fb * ldw + t0 + t] += sa;                                                          \\
                    if (fb + 1 < F) dw[(fb + 1) * ldw + t0 + t] += sb;                                    \\
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
        const T *e, const T *f, T *g, Py_ssize_t h, Py_ssize_t i, Py_ssize_t j, Py_ssize_t k, Py_ssize_t l) {} \\
        static void dc_dw_##T(const T *a, Py_ssize_t b, const Py_ssize_t *c, Py_ssize_t d, Py_ssize_t e,     \\
                          const T *f, const T *g, Py_ssize_t h, Py_ssize_t i, Py_ssize_t j, Py_ssize_t k,  \\
                          Py_ssize_t l, T *m, Py_ssize_t n) {}                                       \
        static void dc_dwf_##T(const T *a, Py_ssize_t b, const Py_ssize_t *c, Py_ssize_t d, Py_ssize_t e,    \
                               const T *f, Py_ssize_t g, Py_ssize_t h, Py_ssize_t i, Py_ssize_t j, T *k) {}
    DC_STUB(float) DC_STUB(double)
    #define DC_TABLE(T) {0, dc_stub_##T, dc_stub_##T, dc_stub_##T, dc_stub_##T, dc_stub_##T, dc_stub_##T}
    #endif

    typedef void (*dc_forward_float_fn)(const float *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t, const float *,
                                        const float *, float *, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                        Py_ssize_t);
    typedef void (*dc_forward_double_fn)(const double *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t, const double *,
                                         const double *, double *, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                         Py_ssize_t);
    static const dc_forward_float_fn dc_forward_float[7] = DC_TABLE(float);
    static const dc_forward_double_fn dc_forward_double[7] = DC_TABLE(double);
    """
    int DC_VECTORIZED
    int DC_VBYTES
    int DC_DW_TB
    ctypedef void (*ffwd)(const float *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t, const float *, const float *, float *,
                          Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t) noexcept nogil
    ctypedef void (*dfwd)(const double *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t, const double *, const double *, double *,
                          Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t) noexcept nogil
    ffwd *dc_forward_float
    dfwd *dc_forward_double
    void dc_dw_float(const float *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t, Py_ssize_t, const float *,
                     const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, float *,
                     Py_ssize_t) noexcept nogil
    void dc_dw_double(const double *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t, Py_ssize_t, const double *,
                      const double *, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                      double *, Py_ssize_t) noexcept nogil
    void dc_dwf_float(const float *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t, Py_ssize_t, const float *,
                      Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, float *) noexcept nogil
    void dc_dwf_double(const double *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t, Py_ssize_t, const double *,
                       Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, double *) noexcept nogil


cdef inline void pad_image(const floating *src, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, floating *dst,
                           Py_ssize_t Hp, Py_ssize_t Wpp, Py_ssize_t top, Py_ssize_t left) noexcept nogil:
    # The whole stack is zeroed: the kernels read the margins and the rows' tails.
    cdef Py_ssize_t c, i
    memset(dst, 0, C * Hp * Wpp * sizeof(floating))
    for c in range(C):
        for i in range(H):
            memcpy(dst + (c * Hp + top + i) * Wpp + left, src + (c * H + i) * W, W * sizeof(floating))


cdef inline void pad_rows(const floating *src, Py_ssize_t rows, Py_ssize_t W, floating *dst,
                          Py_ssize_t Wq) noexcept nogil:
    # Rows of W copied to rows of Wq with zeros after: dw reads dout's rows in whole vectors.
    cdef Py_ssize_t i
    for i in range(rows):
        memcpy(dst + i * Wq, src + i * W, W * sizeof(floating))
        memset(dst + i * Wq + W, 0, (Wq - W) * sizeof(floating))


cdef inline void transpose_planes(const floating *src, Py_ssize_t m, Py_ssize_t F, Py_ssize_t P,
                                  floating *dst, Py_ssize_t Fp) noexcept nogil:
    # dst[n*P + p, f] = src[n, f, p], zero for F <= f < Fp: each pixel's filters side by side, tile by tile
    # (element by element, each write lands Fp elements past the last: 3x slower on a 32x32x32 image).
    cdef Py_ssize_t n, p
    if F < Fp:
        for p in range(m * P):
            memset(dst + p * Fp + F, 0, (Fp - F) * sizeof(floating))
    for n in range(m):
        transpose_tiles_ld(src + n * F * P, dst + n * P * Fp, F, P, Fp, <floating*>NULL)
