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
from libc.string cimport memcpy, memset


# The nk rows k of V (or M) lie kstride elements apart, often a multiple of 4 KiB:
# writing (or reading) all nk at once for each tile thrashes one cache set.
# So each plane's tiles go through a scratch buffer
# [nk][T], moved to or from V one contiguous row of T elements at a time.

cdef inline void _scatter_rows(const floating* buf, floating* v, Py_ssize_t T,
                               Py_ssize_t kstride, Py_ssize_t nk) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(nk):
        memcpy(v + k * kstride, buf + k * T, T * sizeof(floating))


cdef inline void _gather_rows(const floating* v, floating* buf, Py_ssize_t T,
                              Py_ssize_t kstride, Py_ssize_t nk) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(nk):
        memcpy(buf + k * T, v + k * kstride, T * sizeof(floating))


cdef enum:
    CB = 8  # channels per block of the transposed input transform


cdef inline void _scatter_cols(const floating* buf, floating* v, Py_ssize_t T, Py_ssize_t kstride,
                               Py_ssize_t nk, Py_ssize_t C, Py_ssize_t nch) noexcept nogil:
    # v[k*kstride + t*C + j] = buf[(j*nk + k)*T + t] for the nch (<= CB) channels j of a block:
    # runs of nch contiguous values into each (P, C) slab instead of single scattered ones.
    cdef Py_ssize_t k, t, j, bs = nk * T
    cdef floating* row
    for k in range(nk):
        for t in range(T):
            row = v + k * kstride + t * C
            for j in range(nch):
                row[j] = buf[j * bs + k * T + t]


cdef _scratch(floating like, int nthreads, Py_ssize_t tH, Py_ssize_t tW, Py_ssize_t m, Py_ssize_t planes):
    # Per thread: the [(m+2)^2][T] tile rows of `planes` planes (F(2x2) stages each plane's
    # tiles; F(4x4) works on V and M in place and needs none unless transposing), then one
    # zero-padded (m*tH + 2) x (m*tW + 2) plane.
    return np.empty((max(nthreads, 1), planes * (m + 2) * (m + 2) * tH * tW + (m * tH + 2) * (m * tW + 2)),
                    dtype=np.float32 if floating is float else np.float64)


cdef inline void _input_plane(const floating* x, floating* v, floating* pl, Py_ssize_t H, Py_ssize_t W,
                              Py_ssize_t pad, Py_ssize_t tH, Py_ssize_t tW) noexcept nogil:
    # v[k*T + ti*tW + tj] = (B^T d B)[k] for every tile of one plane. The plane is
    # first copied into pl with its zero padding, so no tile needs a bounds check.
    cdef Py_ssize_t T = tH * tW, Wp = 2 * tW + 2, Hp = 2 * tH + 2
    cdef Py_ssize_t ti, tj, h, c, o
    cdef const floating* r0
    cdef const floating* r1
    cdef const floating* r2
    cdef const floating* r3
    cdef floating a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, e0, e1, e2, e3
    memset(pl, 0, Hp * Wp * sizeof(floating))
    for h in range(H):
        memcpy(pl + (h + pad) * Wp + pad, x + h * W, W * sizeof(floating))
    for ti in range(tH):
        r0 = pl + 2 * ti * Wp
        r1 = r0 + Wp
        r2 = r1 + Wp
        r3 = r2 + Wp
        o = ti * tW
        for tj in range(tW):
            c = 2 * tj
            # d B on each of the 4 rows, then B^T on the columns
            a0 = r0[c] - r0[c + 2]
            a1 = r0[c + 1] + r0[c + 2]
            a2 = r0[c + 2] - r0[c + 1]
            a3 = r0[c + 1] - r0[c + 3]
            b0 = r1[c] - r1[c + 2]
            b1 = r1[c + 1] + r1[c + 2]
            b2 = r1[c + 2] - r1[c + 1]
            b3 = r1[c + 1] - r1[c + 3]
            c0 = r2[c] - r2[c + 2]
            c1 = r2[c + 1] + r2[c + 2]
            c2 = r2[c + 2] - r2[c + 1]
            c3 = r2[c + 1] - r2[c + 3]
            e0 = r3[c] - r3[c + 2]
            e1 = r3[c + 1] + r3[c + 2]
            e2 = r3[c + 2] - r3[c + 1]
            e3 = r3[c + 1] - r3[c + 3]
            v[0 * T + o + tj] = a0 - c0
            v[1 * T + o + tj] = a1 - c1
            v[2 * T + o + tj] = a2 - c2
            v[3 * T + o + tj] = a3 - c3
            v[4 * T + o + tj] = b0 + c0
            v[5 * T + o + tj] = b1 + c1
            v[6 * T + o + tj] = b2 + c2
            v[7 * T + o + tj] = b3 + c3
            v[8 * T + o + tj] = c0 - b0
            v[9 * T + o + tj] = c1 - b1
            v[10 * T + o + tj] = c2 - b2
            v[11 * T + o + tj] = c3 - b3
            v[12 * T + o + tj] = b0 - e0
            v[13 * T + o + tj] = b1 - e1
            v[14 * T + o + tj] = b2 - e2
            v[15 * T + o + tj] = b3 - e3


cdef inline void _input_adjoint_plane(const floating* v, floating* pl, floating* dx, Py_ssize_t H,
                                      Py_ssize_t W, Py_ssize_t pad, Py_ssize_t tH,
                                      Py_ssize_t tW) noexcept nogil:
    # dx = sum of B dV B^T over the tiles of one plane: tiles accumulate into the padded
    # plane pl, whose interior is then added to dx (the padding is dropped).
    cdef Py_ssize_t T = tH * tW, Wp = 2 * tW + 2, Hp = 2 * tH + 2
    cdef Py_ssize_t ti, tj, r, s, o, h, w
    cdef floating u[16]
    cdef floating t[16]
    cdef floating* p
    memset(pl, 0, Hp * Wp * sizeof(floating))
    for ti in range(tH):
        for tj in range(tW):
            o = ti * tW + tj
            for r in range(16):
                u[r] = v[r * T + o]
            for s in range(4):  # rows: t = B u
                t[0 + s] = u[0 + s]
                t[4 + s] = u[4 + s] - u[8 + s] + u[12 + s]
                t[8 + s] = u[4 + s] + u[8 + s] - u[0 + s]
                t[12 + s] = -u[12 + s]
            p = pl + 2 * ti * Wp + 2 * tj
            for r in range(4):  # columns: t B^T, accumulated into the plane
                p[r * Wp + 0] += t[4 * r + 0]
                p[r * Wp + 1] += t[4 * r + 1] - t[4 * r + 2] + t[4 * r + 3]
                p[r * Wp + 2] += t[4 * r + 1] + t[4 * r + 2] - t[4 * r + 0]
                p[r * Wp + 3] -= t[4 * r + 3]
    for h in range(H):
        p = pl + (h + pad) * Wp + pad
        for w in range(W):
            dx[h * W + w] = p[w]


cdef inline void _output_plane(const floating* m, floating* pl, floating* out, floating bias,
                               Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t tH,
                               Py_ssize_t tW) noexcept nogil:
    # out = A^T m A + bias for every tile of one plane: one row of tiles goes into
    # two rows of pl (2*tW wide), then the first Wo entries of each go to out.
    cdef Py_ssize_t T = tH * tW, Wq = 2 * tW
    cdef Py_ssize_t ti, tj, s, o, h, w
    cdef floating t[8]
    cdef floating u[16]
    cdef floating* q
    for ti in range(tH):
        for tj in range(tW):
            o = ti * tW + tj
            for s in range(16):
                u[s] = m[s * T + o]
            for s in range(4):  # rows: t = A^T u
                t[s] = u[s] + u[4 + s] + u[8 + s]
                t[4 + s] = u[4 + s] - u[8 + s] - u[12 + s]
            pl[2 * tj] = t[0] + t[1] + t[2]
            pl[2 * tj + 1] = t[1] - t[2] - t[3]
            pl[Wq + 2 * tj] = t[4] + t[5] + t[6]
            pl[Wq + 2 * tj + 1] = t[5] - t[6] - t[7]
        for h in range(2):
            if 2 * ti + h < Ho:
                q = out + (2 * ti + h) * Wo
                for w in range(Wo):
                    q[w] = pl[h * Wq + w] + bias


cdef inline void _output_adjoint_plane(const floating* dy, floating* pl, floating* m, Py_ssize_t Ho,
                                       Py_ssize_t Wo, Py_ssize_t tH, Py_ssize_t tW) noexcept nogil:
    # m[k*T + o] = (A dY A^T)[k] for every tile of one plane; dY is first copied
    # into the zero-padded 2*tH x 2*tW plane pl.
    cdef Py_ssize_t T = tH * tW, Wq = 2 * tW
    cdef Py_ssize_t ti, tj, h, o
    cdef floating y00, y01, y10, y11, t0, t1, t2, t3, t4, t5, t6, t7
    cdef const floating* p
    memset(pl, 0, 2 * tH * Wq * sizeof(floating))
    for h in range(Ho):
        memcpy(pl + h * Wq, dy + h * Wo, Wo * sizeof(floating))
    for ti in range(tH):
        p = pl + 2 * ti * Wq
        o = ti * tW
        for tj in range(tW):
            y00 = p[2 * tj]
            y01 = p[2 * tj + 1]
            y10 = p[Wq + 2 * tj]
            y11 = p[Wq + 2 * tj + 1]
            # columns: t[a, s] = (dY A^T)[a, s]; rows: A t
            t0 = y00
            t1 = y00 + y01
            t2 = y00 - y01
            t3 = -y01
            t4 = y10
            t5 = y10 + y11
            t6 = y10 - y11
            t7 = -y11
            m[0 * T + o + tj] = t0
            m[1 * T + o + tj] = t1
            m[2 * T + o + tj] = t2
            m[3 * T + o + tj] = t3
            m[4 * T + o + tj] = t0 + t4
            m[5 * T + o + tj] = t1 + t5
            m[6 * T + o + tj] = t2 + t6
            m[7 * T + o + tj] = t3 + t7
            m[8 * T + o + tj] = t0 - t4
            m[9 * T + o + tj] = t1 - t5
            m[10 * T + o + tj] = t2 - t6
            m[11 * T + o + tj] = t3 - t7
            m[12 * T + o + tj] = -t4
            m[13 * T + o + tj] = -t5
            m[14 * T + o + tj] = -t6
            m[15 * T + o + tj] = -t7


# ---------------------------------------------------------------- F(4x4, 3x3)
# Two designs, not one written twice: F(2x2) above works per tile in registers, F(4x4) below
# on blocks of tiles. F(2x2) in the blocked form, generated from one template, ran slower
# (benchmarks/README.md), so each size keeps the form that suits it.
# Tiles of 4x4 outputs read 6x6 input patches at (4*ti - pad, 4*tj - pad);
# k = 6*r + s indexes the 36 positions of a transformed tile (36 rows of V, M).
# Each 2-D transform is the 1-D one on the 6 columns, then on the 6 rows.

# The transforms run on blocks of TB tiles held in local arrays, tile index
# innermost: each 1-D transform is then a loop over TB contiguous lanes that gcc
# vectorises (locals cannot alias, so no run-time overlap checks). Per tile the
# only scalar work is moving its patch between the plane and the block.
cdef enum:
    TB = 16

cdef inline void _bt6(const floating* d, Py_ssize_t ds, floating* r, Py_ssize_t rs) noexcept nogil:
    # r = B^T d on TB lanes: d[i*ds + t] in, r[k*rs + t] out
    cdef Py_ssize_t t
    cdef floating d0, d1, d2, d3, d4, d5, a, b, c, e
    for t in range(<Py_ssize_t>TB):
        d0 = d[t]
        d1 = d[ds + t]
        d2 = d[2 * ds + t]
        d3 = d[3 * ds + t]
        d4 = d[4 * ds + t]
        d5 = d[5 * ds + t]
        a = d4 - 4 * d2
        b = d3 - 4 * d1
        c = d4 - d2
        e = 2 * (d3 - d1)
        r[t] = 4 * d0 - 5 * d2 + d4
        r[rs + t] = a + b
        r[2 * rs + t] = a - b
        r[3 * rs + t] = c + e
        r[4 * rs + t] = c - e
        r[5 * rs + t] = 4 * d1 - 5 * d3 + d5


cdef inline void _b6(const floating* u, Py_ssize_t us, floating* r, Py_ssize_t rs) noexcept nogil:
    # r = B u on TB lanes, the adjoint of _bt6
    cdef Py_ssize_t t
    cdef floating u0, u5, p12, m12, p34, m34
    for t in range(<Py_ssize_t>TB):
        u0 = u[t]
        u5 = u[5 * us + t]
        p12 = u[us + t] + u[2 * us + t]
        m12 = u[us + t] - u[2 * us + t]
        p34 = u[3 * us + t] + u[4 * us + t]
        m34 = u[3 * us + t] - u[4 * us + t]
        r[t] = 4 * u0
        r[rs + t] = 4 * (u5 - m12) - 2 * m34
        r[2 * rs + t] = -5 * u0 - 4 * p12 - p34
        r[3 * rs + t] = m12 + 2 * m34 - 5 * u5
        r[4 * rs + t] = u0 + p12 + p34
        r[5 * rs + t] = u5


cdef inline void _at6(const floating* m, Py_ssize_t ms, floating* y, Py_ssize_t ys) noexcept nogil:
    # y = A^T m on TB lanes (6 rows in, 4 out)
    cdef Py_ssize_t t
    cdef floating s12, d12, s34, d34
    for t in range(<Py_ssize_t>TB):
        s12 = m[ms + t] + m[2 * ms + t]
        d12 = m[ms + t] - m[2 * ms + t]
        s34 = m[3 * ms + t] + m[4 * ms + t]
        d34 = m[3 * ms + t] - m[4 * ms + t]
        y[t] = m[t] + s12 + s34
        y[ys + t] = d12 + 2 * d34
        y[2 * ys + t] = s12 + 4 * s34
        y[3 * ys + t] = d12 + 8 * d34 + m[5 * ms + t]


cdef inline void _a6(const floating* y, Py_ssize_t ys, floating* r, Py_ssize_t rs) noexcept nogil:
    # r = A y on TB lanes, the adjoint of _at6 (4 rows in, 6 out)
    cdef Py_ssize_t t
    cdef floating y0, y3, s02, s13, q02, q13
    for t in range(<Py_ssize_t>TB):
        y0 = y[t]
        y3 = y[3 * ys + t]
        s02 = y0 + y[2 * ys + t]
        s13 = y[ys + t] + y3
        q02 = y0 + 4 * y[2 * ys + t]
        q13 = 2 * y[ys + t] + 8 * y3
        r[t] = y0
        r[rs + t] = s02 + s13
        r[2 * rs + t] = s02 - s13
        r[3 * rs + t] = q02 + q13
        r[4 * rs + t] = q02 - q13
        r[5 * rs + t] = y3


cdef inline void _rows_in(const floating* src, Py_ssize_t stride, floating* D, Py_ssize_t nrows,
                          Py_ssize_t nb) noexcept nogil:
    # D[k*TB + t] = src[k*stride + t] for t < nb: a full block as fixed-length (vectorised) copies
    cdef Py_ssize_t k, t
    if nb == TB:
        for k in range(nrows):
            for t in range(<Py_ssize_t>TB):
                D[k * TB + t] = src[k * stride + t]
    else:
        for k in range(nrows):
            memcpy(D + k * TB, src + k * stride, nb * sizeof(floating))


cdef inline void _rows_out(const floating* D, floating* dst, Py_ssize_t stride, Py_ssize_t nrows,
                           Py_ssize_t nb) noexcept nogil:
    # dst[k*stride + t] = D[k*TB + t] for t < nb (the inverse of _rows_in)
    cdef Py_ssize_t k, t
    if nb == TB:
        for k in range(nrows):
            for t in range(<Py_ssize_t>TB):
                dst[k * stride + t] = D[k * TB + t]
    else:
        for k in range(nrows):
            memcpy(dst + k * stride, D + k * TB, nb * sizeof(floating))


cdef inline void _input_plane4(const floating* x, floating* v, Py_ssize_t vs, floating* pl, Py_ssize_t H,
                               Py_ssize_t W, Py_ssize_t pad, Py_ssize_t tH, Py_ssize_t tW) noexcept nogil:
    # v[k*vs + ti*tW + tj] = (B^T d B)[k] for every tile of one plane, through the padded copy pl.
    # (The rows k of V are written in place: blocks of TB tiles make whole-line runs, so the
    # 36 rows at once do not thrash the cache as one tile at a time did with F(2x2, 3x3).)
    cdef Py_ssize_t T = tH * tW, Wp = 4 * tW + 2, Hp = 4 * tH + 2
    cdef Py_ssize_t blk, t0, nb, tb, ti, tj, i, j
    cdef floating D[36 * TB]
    cdef floating E[36 * TB]
    cdef const floating* p
    memset(pl, 0, Hp * Wp * sizeof(floating))
    memset(D, 0, sizeof(D))
    for i in range(H):
        memcpy(pl + (i + pad) * Wp + pad, x + i * W, W * sizeof(floating))
    for blk in range((T + TB - 1) // TB):
        t0 = blk * TB
        nb = min(<Py_ssize_t>TB, T - t0)
        ti = t0 // tW
        tj = t0 % tW
        for tb in range(nb):  # the 6x6 patches, tile index innermost
            p = pl + 4 * ti * Wp + 4 * tj
            tj += 1
            if tj == tW:  # counters, not a division per tile
                tj = 0
                ti += 1
            for i in range(6):
                for j in range(6):
                    D[(6 * i + j) * TB + tb] = p[i * Wp + j]
        for j in range(6):  # columns: E[6r + j] = (B^T d)[r, j]
            _bt6(D + j * TB, 6 * TB, E + j * TB, 6 * TB)
        for i in range(6):  # rows: D[6r + s] = (B^T d B)[r, s]
            _bt6(E + 6 * i * TB, TB, D + 6 * i * TB, TB)
        _rows_out(D, v + t0, vs, 36, nb)


cdef inline void _input_adjoint_plane4(const floating* v, Py_ssize_t vs, floating* pl, floating* dx,
                                       Py_ssize_t H, Py_ssize_t W, Py_ssize_t pad, Py_ssize_t tH,
                                       Py_ssize_t tW) noexcept nogil:
    # dx = sum of B dV B^T over the tiles of one plane, accumulated in the padded plane pl first.
    cdef Py_ssize_t T = tH * tW, Wp = 4 * tW + 2, Hp = 4 * tH + 2
    cdef Py_ssize_t blk, t0, nb, tb, ti, tj, i, j, h, w
    cdef floating D[36 * TB]
    cdef floating E[36 * TB]
    cdef floating* p
    memset(pl, 0, Hp * Wp * sizeof(floating))
    memset(D, 0, sizeof(D))
    for blk in range((T + TB - 1) // TB):
        t0 = blk * TB
        nb = min(<Py_ssize_t>TB, T - t0)
        _rows_in(v + t0, vs, D, 36, nb)
        for j in range(6):  # columns: E[6i + j] = (B u)[i, j]
            _b6(D + j * TB, 6 * TB, E + j * TB, 6 * TB)
        for i in range(6):  # rows: D[6i + j] = (B u B^T)[i, j]
            _b6(E + 6 * i * TB, TB, D + 6 * i * TB, TB)
        ti = t0 // tW
        tj = t0 % tW
        for tb in range(nb):  # overlapping patches: accumulate one tile at a time
            p = pl + 4 * ti * Wp + 4 * tj
            tj += 1
            if tj == tW:
                tj = 0
                ti += 1
            for i in range(6):
                for j in range(6):
                    p[i * Wp + j] += D[(6 * i + j) * TB + tb]
    for h in range(H):
        p = pl + (h + pad) * Wp + pad
        for w in range(W):
            dx[h * W + w] = p[w]


cdef inline void _output_plane4(const floating* m, Py_ssize_t ms, floating* pl, floating* out, floating bias,
                                Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t tH,
                                Py_ssize_t tW) noexcept nogil:
    # out = A^T m A + bias per tile: tiles fill the 4*tH x 4*tW plane pl, which is cropped into out
    # (or, when the tiles cover out exactly, go straight into it).
    cdef Py_ssize_t T = tH * tW, Wq = 4 * tW
    cdef bint whole = Ho == 4 * tH and Wo == 4 * tW
    cdef Py_ssize_t blk, t0, nb, tb, ti, tj, a, b, h, w
    cdef floating D[36 * TB]
    cdef floating E[24 * TB]
    cdef floating* p
    memset(D, 0, sizeof(D))
    for blk in range((T + TB - 1) // TB):
        t0 = blk * TB
        nb = min(<Py_ssize_t>TB, T - t0)
        _rows_in(m + t0, ms, D, 36, nb)
        for b in range(6):  # columns: E[6a + s] = (A^T m)[a, s]
            _at6(D + b * TB, 6 * TB, E + b * TB, 6 * TB)
        for a in range(4):  # rows: D[4a + b] = (A^T m A)[a, b]
            _at6(E + 6 * a * TB, TB, D + 4 * a * TB, TB)
        ti = t0 // tW
        tj = t0 % tW
        for tb in range(nb):
            if whole:  # no partial edge tiles: straight into out
                p = out + 4 * ti * Wo + 4 * tj
                for a in range(4):
                    for b in range(4):
                        p[a * Wo + b] = D[(4 * a + b) * TB + tb] + bias
            else:
                p = pl + 4 * ti * Wq + 4 * tj
                for a in range(4):
                    for b in range(4):
                        p[a * Wq + b] = D[(4 * a + b) * TB + tb]
            tj += 1
            if tj == tW:
                tj = 0
                ti += 1
    if whole:
        return
    for h in range(Ho):
        p = pl + h * Wq
        for w in range(Wo):
            out[h * Wo + w] = p[w] + bias


cdef inline void _output_adjoint_plane4(const floating* dy, floating* pl, floating* m, Py_ssize_t ms,
                                        Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t tH,
                                        Py_ssize_t tW) noexcept nogil:
    # m[k*ms + o] = (A dY A^T)[k] per tile; dY is first copied into the zero-padded 4*tH x 4*tW plane pl.
    cdef Py_ssize_t T = tH * tW, Wq = 4 * tW
    cdef Py_ssize_t blk, t0, nb, tb, ti, tj, a, b, i, h
    cdef floating D[36 * TB]
    cdef floating E[24 * TB]
    cdef const floating* p
    memset(pl, 0, 4 * tH * Wq * sizeof(floating))
    memset(D, 0, sizeof(D))
    for h in range(Ho):
        memcpy(pl + h * Wq, dy + h * Wo, Wo * sizeof(floating))
    for blk in range((T + TB - 1) // TB):
        t0 = blk * TB
        nb = min(<Py_ssize_t>TB, T - t0)
        ti = t0 // tW
        tj = t0 % tW
        for tb in range(nb):
            p = pl + 4 * ti * Wq + 4 * tj
            tj += 1
            if tj == tW:
                tj = 0
                ti += 1
            for a in range(4):
                for b in range(4):
                    D[(4 * a + b) * TB + tb] = p[a * Wq + b]
        for b in range(4):  # columns: E[4i + b] = (A dY)[i, b]
            _a6(D + b * TB, 4 * TB, E + b * TB, 4 * TB)
        for i in range(6):  # rows: D[6i + j] = (A dY A^T)[i, j]
            _a6(E + 4 * i * TB, TB, D + 6 * i * TB, TB)
        _rows_out(D, m + t0, ms, 36, nb)


# ---------------------------------------------------------------- entry points
# m = 2 or 4 picks F(2x2, 3x3) or F(4x4, 3x3); nk = (m + 2)^2 rows of V and M.
# Every plane of the output is written by one thread (prange over the planes).


def winograd_input(const floating[:, :, :, ::1] x, floating[:, :, :] V, Py_ssize_t pad,
                   Py_ssize_t tH, Py_ssize_t tW, int nthreads=1, int m=2, bint transposed=False):
    """V[k, c, (n*tH + ti)*tW + tj] = (B^T d B)[k] of the tile (ti, tj) of plane x[n, c].

    ``transposed``: V is (nk, P, C) instead, each slab C-contiguous, and gets
    V[k, (n*tH + ti)*tW + tj, c] (the layout that makes the dw GEMM an NN product).
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t T = tH * tW, nk = (m + 2) * (m + 2)
    cdef Py_ssize_t kstride = V.strides[0] // sizeof(floating)
    cdef Py_ssize_t nc, nblk = (C + CB - 1) // CB, blk, c0, nch, j
    cdef Py_ssize_t staged = <Py_ssize_t>(m == 2)  # planes of tiles staged per thread
    if transposed:
        staged = CB
    cdef floating[:, ::1] buf = _scratch(x[0, 0, 0, 0], nthreads, tH, tW, m, staged)
    cdef floating* tb
    with nogil:
        if transposed:
            for blk in prange(N * nblk, schedule="static", num_threads=nthreads):
                tb = &buf[threadid(), 0]
                c0 = (blk % nblk) * CB
                nch = min(<Py_ssize_t>CB, C - c0)
                for j in range(nch):
                    if m == 4:
                        _input_plane4(&x[blk // nblk, c0 + j, 0, 0], tb + j * nk * T, T, tb + CB * nk * T,
                                      H, W, pad, tH, tW)
                    else:
                        _input_plane(&x[blk // nblk, c0 + j, 0, 0], tb + j * nk * T, tb + CB * nk * T,
                                     H, W, pad, tH, tW)
                _scatter_cols(tb, &V[0, (blk // nblk) * T, c0], T, kstride, nk, C, nch)
        else:
            for nc in prange(N * C, schedule="static", num_threads=nthreads):
                tb = &buf[threadid(), 0]
                if m == 4:
                    _input_plane4(&x[nc // C, nc % C, 0, 0], &V[0, nc % C, (nc // C) * T], kstride, tb,
                                  H, W, pad, tH, tW)
                else:
                    _input_plane(&x[nc // C, nc % C, 0, 0], tb, tb + nk * T, H, W, pad, tH, tW)
                    _scatter_rows(tb, &V[0, nc % C, (nc // C) * T], T, kstride, nk)


def winograd_input_adjoint(const floating[:, :, :] dV, floating[:, :, :, ::1] dx, Py_ssize_t pad,
                           Py_ssize_t tH, Py_ssize_t tW, int nthreads=1, int m=2):
    """Adjoint of winograd_input: dx[n, c] = the sum over its tiles of B dV B^T (every plane is overwritten)."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t T = tH * tW, nk = (m + 2) * (m + 2)
    cdef Py_ssize_t kstride = dV.strides[0] // sizeof(floating)
    cdef Py_ssize_t nc
    cdef floating[:, ::1] buf = _scratch(dx[0, 0, 0, 0], nthreads, tH, tW, m, <Py_ssize_t>(m == 2))
    cdef floating* tb
    with nogil:
        for nc in prange(N * C, schedule="static", num_threads=nthreads):
            tb = &buf[threadid(), 0]
            if m == 4:
                _input_adjoint_plane4(&dV[0, nc % C, (nc // C) * T], kstride, tb, &dx[nc // C, nc % C, 0, 0],
                                      H, W, pad, tH, tW)
            else:
                _gather_rows(&dV[0, nc % C, (nc // C) * T], tb, T, kstride, nk)
                _input_adjoint_plane(tb, tb + nk * T, &dx[nc // C, nc % C, 0, 0], H, W, pad, tH, tW)


def winograd_output(const floating[:, :, :] M, const floating[::1] b, floating[:, :, :, ::1] out,
                    Py_ssize_t tH, Py_ssize_t tW, int nthreads=1, int m=2):
    """out[n, f] = A^T m A + b[f] per tile, m = M[:, f, tiles of image n]; edge tiles cropped."""
    cdef Py_ssize_t N = out.shape[0], F = out.shape[1], Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t T = tH * tW, nk = (m + 2) * (m + 2)
    cdef Py_ssize_t kstride = M.strides[0] // sizeof(floating)
    cdef Py_ssize_t nf
    cdef floating[:, ::1] buf = _scratch(out[0, 0, 0, 0], nthreads, tH, tW, m, <Py_ssize_t>(m == 2))
    cdef floating* tb
    with nogil:
        for nf in prange(N * F, schedule="static", num_threads=nthreads):
            tb = &buf[threadid(), 0]
            if m == 4:
                _output_plane4(&M[0, nf % F, (nf // F) * T], kstride, tb, &out[nf // F, nf % F, 0, 0],
                               b[nf % F], Ho, Wo, tH, tW)
            else:
                _gather_rows(&M[0, nf % F, (nf // F) * T], tb, T, kstride, nk)
                _output_plane(tb, tb + nk * T, &out[nf // F, nf % F, 0, 0], b[nf % F], Ho, Wo, tH, tW)


def winograd_output_adjoint(const floating[:, :, :, ::1] dout, floating[:, :, :] dM, Py_ssize_t tH,
                            Py_ssize_t tW, int nthreads=1, int m=2):
    """Adjoint of winograd_output (without the bias): dM[:, f, tiles of n] = A dY A^T."""
    cdef Py_ssize_t N = dout.shape[0], F = dout.shape[1], Ho = dout.shape[2], Wo = dout.shape[3]
    cdef Py_ssize_t T = tH * tW, nk = (m + 2) * (m + 2)
    cdef Py_ssize_t kstride = dM.strides[0] // sizeof(floating)
    cdef Py_ssize_t nf
    cdef floating[:, ::1] buf = _scratch(dout[0, 0, 0, 0], nthreads, tH, tW, m, <Py_ssize_t>(m == 2))
    cdef floating* tb
    with nogil:
        for nf in prange(N * F, schedule="static", num_threads=nthreads):
            tb = &buf[threadid(), 0]
            if m == 4:
                _output_adjoint_plane4(&dout[nf // F, nf % F, 0, 0], tb, &dM[0, nf % F, (nf // F) * T], kstride,
                                       Ho, Wo, tH, tW)
            else:
                _output_adjoint_plane(&dout[nf // F, nf % F, 0, 0], tb + nk * T, tb, Ho, Wo, tH, tW)
                _scatter_rows(tb, &dM[0, nf % F, (nf // F) * T], T, kstride, nk)


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
