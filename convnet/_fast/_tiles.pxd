# The Winograd tile transforms on raw pointers, shared by the public kernels (_winograd.pyx) and the batch-part
# pipelines that call BLAS themselves (_conv_part.pyx). Inline: each compiles into its caller, built for its CPU
# variant. Layouts, the matrices and the caller's guarantees: _winograd.pyx's docstring. None of them validates.
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


# ---------------------------------------------------------------- one plane's stage
# Each entry point and each batch-part pipeline runs these over its planes; m = 2 or 4, nk = (m+2)^2,
# T = tH*tW tiles per plane, slabs kstride elements apart. tb: scratch_size(tH, tW, m, planes) elements, planes
# as each function says.


cdef inline Py_ssize_t scratch_size(Py_ssize_t tH, Py_ssize_t tW, Py_ssize_t m, Py_ssize_t planes) noexcept nogil:
    # The [(m+2)^2][T] tile rows of `planes` planes (F(2x2) stages each plane's tiles; F(4x4) works on V and M
    # in place and needs none unless transposing), then one zero-padded (m*tH + 2) x (m*tW + 2) plane.
    return planes * (m + 2) * (m + 2) * tH * tW + (m * tH + 2) * (m * tW + 2)


cdef inline void input_plane(const floating* x, floating* v, Py_ssize_t kstride, floating* tb, Py_ssize_t H,
                             Py_ssize_t W, Py_ssize_t pad, Py_ssize_t tH, Py_ssize_t tW, Py_ssize_t m) noexcept nogil:
    # v[k*kstride + t] = (B^T d B)[k] of tile t of the plane x (tb: 1 plane).
    cdef Py_ssize_t T = tH * tW, nk = (m + 2) * (m + 2)
    if m == 4:
        _input_plane4(x, v, kstride, tb, H, W, pad, tH, tW)
    else:
        _input_plane(x, tb, tb + nk * T, H, W, pad, tH, tW)
        _scatter_rows(tb, v, T, kstride, nk)


cdef inline void input_block_t(const floating* x, Py_ssize_t nch, floating* v, Py_ssize_t kstride, Py_ssize_t C,
                               floating* tb, Py_ssize_t H, Py_ssize_t W, Py_ssize_t pad, Py_ssize_t tH,
                               Py_ssize_t tW, Py_ssize_t m) noexcept nogil:
    # The nch <= CB consecutive planes from x, transposed: v[k*kstride + t*C + j] for plane j (tb: CB planes).
    cdef Py_ssize_t T = tH * tW, nk = (m + 2) * (m + 2), j
    for j in range(nch):
        if m == 4:
            _input_plane4(x + j * H * W, tb + j * nk * T, T, tb + CB * nk * T, H, W, pad, tH, tW)
        else:
            _input_plane(x + j * H * W, tb + j * nk * T, tb + CB * nk * T, H, W, pad, tH, tW)
    _scatter_cols(tb, v, T, kstride, nk, C, nch)


cdef inline void input_adjoint_plane(const floating* v, Py_ssize_t kstride, floating* tb, floating* dx,
                                     Py_ssize_t H, Py_ssize_t W, Py_ssize_t pad, Py_ssize_t tH, Py_ssize_t tW,
                                     Py_ssize_t m) noexcept nogil:
    # The plane dx (overwritten) = the sum over its tiles t of B dV B^T, dV[k] = v[k*kstride + t] (tb: 1 plane).
    cdef Py_ssize_t T = tH * tW, nk = (m + 2) * (m + 2)
    if m == 4:
        _input_adjoint_plane4(v, kstride, tb, dx, H, W, pad, tH, tW)
    else:
        _gather_rows(v, tb, T, kstride, nk)
        _input_adjoint_plane(tb, tb + nk * T, dx, H, W, pad, tH, tW)


cdef inline void output_plane(const floating* mt, Py_ssize_t kstride, floating* tb, floating* out, floating bias,
                              Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t tH, Py_ssize_t tW, Py_ssize_t m) noexcept nogil:
    # The plane out = A^T M A + bias per tile t, M[k] = mt[k*kstride + t]; edge tiles cropped (tb: 1 plane).
    cdef Py_ssize_t T = tH * tW, nk = (m + 2) * (m + 2)
    if m == 4:
        _output_plane4(mt, kstride, tb, out, bias, Ho, Wo, tH, tW)
    else:
        _gather_rows(mt, tb, T, kstride, nk)
        _output_plane(tb, tb + nk * T, out, bias, Ho, Wo, tH, tW)


cdef inline void output_adjoint_plane(const floating* dy, floating* tb, floating* mt, Py_ssize_t kstride,
                                      Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t tH, Py_ssize_t tW,
                                      Py_ssize_t m) noexcept nogil:
    # mt[k*kstride + t] = (A dY A^T)[k] of tile t of the plane dy (tb: 1 plane).
    cdef Py_ssize_t T = tH * tW, nk = (m + 2) * (m + 2)
    if m == 4:
        _output_adjoint_plane4(dy, tb, mt, kstride, Ho, Wo, tH, tW)
    else:
        _output_adjoint_plane(dy, tb + nk * T, tb, Ho, Wo, tH, tW)
        _scatter_rows(tb, mt, T, kstride, nk)
