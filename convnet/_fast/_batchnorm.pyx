# cython: language_level=3
"""Spatial batch-norm kernels, optionally fused with the ReLU that follows (private; call them
through convnet.fast.batchnorm).

x is (N, C, P) with P = H*W, statistics per channel c over the N planes x[:, c]. Each call
handles the channels c0 <= c < c1, so callers split the channels between threads and each
thread owns its channels' statistics and writes.

Forward (training): one pass for the statistics (sums of x - x[0, c, 0], so the shift keeps
the sum of squares accurate; blocks of 1024 summed in x's dtype, the blocks' sums in double), one pass writing y = x*scale + shift (ReLU'd if asked),
scale = gamma/sqrt(var + eps), shift = beta - mean*scale. Backward: one pass for
sum(dy) and sum(dy*xhat) (dy is dout masked where the ReLU output was zero, recomputed from x),
one pass writing dx = scale*(dy - sum(dy)/M - xhat*sum(dy*xhat)/M) (training) or scale*dy (test).

The sums are reductions that gcc vectorises only when allowed to reassociate them: setup.py
builds this module with -fassociative-math (the order of a sum changes, not its terms).

These kernels do not validate: the caller guarantees C-contiguous arrays of one dtype with
the shapes stated, var + eps > 0, and float64 statistics arrays of length C.
"""
from cython.parallel import prange
from cython cimport floating
from libc.math cimport sqrt


cdef enum:
    BLOCK = 1024  # elements summed in x's dtype before the sum moves to double


cdef inline void _stats_channel(const floating* x, Py_ssize_t N, Py_ssize_t C, Py_ssize_t P, Py_ssize_t c,
                                double* mean, double* var) noexcept nogil:
    cdef Py_ssize_t n, p, p0, p1
    cdef const floating* row
    cdef floating k = x[c * P], v, ps, pss
    cdef double s = 0, ss = 0, d
    for n in range(N):
        row = x + (n * C + c) * P
        p0 = 0
        while p0 < P:
            p1 = p0 + BLOCK if p0 + BLOCK < P else P
            ps = 0
            pss = 0
            for p in range(p0, p1):
                v = row[p] - k
                ps = ps + v
                pss = pss + v * v
            s = s + ps
            ss = ss + pss
            p0 = p1
    s = s / (N * P)
    mean[0] = k + s
    d = ss / (N * P) - s * s
    var[0] = d if d > 0 else 0


def bn_stats(const floating[:, :, ::1] x, double[::1] mean, double[::1] var, Py_ssize_t c0, Py_ssize_t c1,
             int nthreads=1):
    """mean[c], var[c] (biased) of x[:, c, :] for c0 <= c < c1."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], P = x.shape[2]
    cdef Py_ssize_t c
    with nogil:
        if nthreads == 1:  # an OpenMP region costs about 1 us even on one thread
            for c in range(c0, c1):
                _stats_channel(&x[0, 0, 0], N, C, P, c, &mean[c], &var[c])
        else:
            for c in prange(c0, c1, schedule="static", num_threads=nthreads):
                _stats_channel(&x[0, 0, 0], N, C, P, c, &mean[c], &var[c])


cdef inline void _affine_channel(const floating* x, floating* y, Py_ssize_t N, Py_ssize_t C, Py_ssize_t P,
                                 Py_ssize_t c, floating a, floating b, bint relu) noexcept nogil:
    cdef Py_ssize_t n, p
    cdef const floating* xr
    cdef floating* yr
    cdef floating v
    for n in range(N):
        xr = x + (n * C + c) * P
        yr = y + (n * C + c) * P
        if relu:
            for p in range(P):
                v = xr[p] * a + b
                yr[p] = v if v > 0 else 0
        else:
            for p in range(P):
                yr[p] = xr[p] * a + b


def bn_affine(const floating[:, :, ::1] x, floating[:, :, ::1] y, const double[::1] scale,
              const double[::1] shift, bint relu, Py_ssize_t c0, Py_ssize_t c1, int nthreads=1):
    """y = x*scale[c] + shift[c] per channel c0 <= c < c1, then max(y, 0) if relu."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], P = x.shape[2]
    cdef Py_ssize_t c
    with nogil:
        if nthreads == 1:
            for c in range(c0, c1):
                _affine_channel(&x[0, 0, 0], &y[0, 0, 0], N, C, P, c, <floating>scale[c], <floating>shift[c], relu)
        else:
            for c in prange(c0, c1, schedule="static", num_threads=nthreads):
                _affine_channel(&x[0, 0, 0], &y[0, 0, 0], N, C, P, c, <floating>scale[c], <floating>shift[c], relu)


cdef inline void _grad_sums_channel(const floating* x, const floating* dout, Py_ssize_t N, Py_ssize_t C,
                                    Py_ssize_t P, Py_ssize_t c, floating scale, floating shift, floating mean,
                                    bint relu, double* sdy, double* sdyx) noexcept nogil:
    # sums of dy and dy*(x - mean) over channel c; dy = dout where the ReLU let y through.
    cdef Py_ssize_t n, p, p0, p1
    cdef const floating* xr
    cdef const floating* dr
    cdef floating d, a1, a2
    cdef double s1 = 0, s2 = 0
    for n in range(N):
        xr = x + (n * C + c) * P
        dr = dout + (n * C + c) * P
        p0 = 0
        while p0 < P:
            p1 = p0 + BLOCK if p0 + BLOCK < P else P
            a1 = 0
            a2 = 0
            if relu:
                for p in range(p0, p1):
                    d = dr[p] * <floating>(xr[p] * scale + shift > 0)  # branchless: the sign is random
                    a1 = a1 + d
                    a2 = a2 + d * (xr[p] - mean)
            else:
                for p in range(p0, p1):
                    d = dr[p]
                    a1 = a1 + d
                    a2 = a2 + d * (xr[p] - mean)
            s1 = s1 + a1
            s2 = s2 + a2
            p0 = p1
    sdy[0] = s1
    sdyx[0] = s2


def bn_grad_sums(const floating[:, :, ::1] x, const floating[:, :, ::1] dout, const double[::1] scale,
                 const double[::1] shift, const double[::1] mean, bint relu, double[::1] sdy, double[::1] sdyx,
                 Py_ssize_t c0, Py_ssize_t c1, int nthreads=1):
    """sdy[c] = sum(dy), sdyx[c] = sum(dy*(x - mean[c])) over channel c0 <= c < c1 (dy: dout, ReLU-masked)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], P = x.shape[2]
    cdef Py_ssize_t c
    with nogil:
        if nthreads == 1:
            for c in range(c0, c1):
                _grad_sums_channel(&x[0, 0, 0], &dout[0, 0, 0], N, C, P, c, <floating>scale[c], <floating>shift[c],
                                   <floating>mean[c], relu, &sdy[c], &sdyx[c])
        else:
            for c in prange(c0, c1, schedule="static", num_threads=nthreads):
                _grad_sums_channel(&x[0, 0, 0], &dout[0, 0, 0], N, C, P, c, <floating>scale[c], <floating>shift[c],
                                   <floating>mean[c], relu, &sdy[c], &sdyx[c])


cdef inline void _dx_channel(const floating* x, const floating* dout, floating* dx, Py_ssize_t N, Py_ssize_t C,
                             Py_ssize_t P, Py_ssize_t c, floating scale, floating shift, floating mean,
                             floating k1, floating k2, floating g, bint relu) noexcept nogil:
    # dx = g*dy - k1 - k2*(x - mean): g = scale, k1 = scale*mean(dy), k2 = scale*mean(dy*xc)/var.
    cdef Py_ssize_t n, p
    cdef const floating* xr
    cdef const floating* dr
    cdef floating* r
    cdef floating d
    for n in range(N):
        xr = x + (n * C + c) * P
        dr = dout + (n * C + c) * P
        r = dx + (n * C + c) * P
        if relu:
            for p in range(P):
                d = dr[p] * <floating>(xr[p] * scale + shift > 0)  # branchless: the sign is random
                r[p] = g * d - k1 - k2 * (xr[p] - mean)
        else:
            for p in range(P):
                r[p] = g * dr[p] - k1 - k2 * (xr[p] - mean)


def bn_dx(const floating[:, :, ::1] x, const floating[:, :, ::1] dout, floating[:, :, ::1] dx,
          const double[::1] scale, const double[::1] shift, const double[::1] mean, const double[::1] k1,
          const double[::1] k2, const double[::1] g, bint relu, Py_ssize_t c0, Py_ssize_t c1, int nthreads=1):
    """dx[:, c] = g[c]*dy - k1[c] - k2[c]*(x - mean[c]) for c0 <= c < c1 (dy: dout, ReLU-masked if relu)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], P = x.shape[2]
    cdef Py_ssize_t c
    with nogil:
        if nthreads == 1:
            for c in range(c0, c1):
                _dx_channel(&x[0, 0, 0], &dout[0, 0, 0], &dx[0, 0, 0], N, C, P, c, <floating>scale[c],
                            <floating>shift[c], <floating>mean[c], <floating>k1[c], <floating>k2[c], <floating>g[c],
                            relu)
        else:
            for c in prange(c0, c1, schedule="static", num_threads=nthreads):
                _dx_channel(&x[0, 0, 0], &dout[0, 0, 0], &dx[0, 0, 0], N, C, P, c, <floating>scale[c],
                            <floating>shift[c], <floating>mean[c], <floating>k1[c], <floating>k2[c], <floating>g[c],
                            relu)
