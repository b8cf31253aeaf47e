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

The kernels themselves are C in ``_direct_kernels.pxd``, shared with
``_conv_part.pyx``, which runs one image's rows and taps on two threads. The
wrappers never validate: ``convnet.fast.conv_direct`` checks and allocates,
and each call works on images ``lo:hi`` on the calling thread, without the GIL.
"""
cimport cython
from cython cimport floating

from convnet._fast._direct_kernels cimport (DC_DW_TB, DC_VBYTES, DC_VECTORIZED, dc_dw_double, dc_dw_float,
                                            dc_dwf_double, dc_dwf_float, dc_forward_double, dc_forward_float,
                                            pad_image, pad_rows, transpose_planes)
from convnet._fast._lowering cimport sum_planes

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
            pad_image(&x[n, 0, 0, 0], x.shape[1], x.shape[2], x.shape[3], &scratch[0], Hp, Wpp, top, left)
            if floating is float:
                dc_forward_float[fb](&scratch[0], Wpp, &off[0], ntaps, &wt[0], &bias[0], &out[n, 0, 0, 0],
                                     F, Ho, Wo, 0, Ho)
            else:
                dc_forward_double[fb](&scratch[0], Wpp, &off[0], ntaps, &wt[0], &bias[0], &out[n, 0, 0, 0],
                                      F, Ho, Wo, 0, Ho)


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
                pad_image(&x[n0 + n, 0, 0, 0], C, x.shape[2], x.shape[3], &scratch[n * S], Hp, Wpp, pad, pad)
            if by_filters:
                transpose_planes(&dout[n0, 0, 0, 0], m, F, Ho * Wo, &dscratch[0], Fp)
                if floating is float:
                    dc_dwf_float(&scratch[0], Wpp, &off[0], ntaps, S, &dscratch[0], m, Fp, Ho, Wo, &dw[0, 0])
                else:
                    dc_dwf_double(&scratch[0], Wpp, &off[0], ntaps, S, &dscratch[0], m, Fp, Ho, Wo, &dw[0, 0])
            else:
                pad_rows(&dout[n0, 0, 0, 0], m * F * Ho, Wo, &dscratch[0], Wq)
                if floating is float:
                    dc_dw_float(&scratch[0], Wpp, &off[0], ntaps, S, &dscratch[0], &zeros[0], m, F, Ho, Wo, Wq,
                                &dw[0, 0], ntaps)
                else:
                    dc_dw_double(&scratch[0], Wpp, &off[0], ntaps, S, &dscratch[0], &zeros[0], m, F, Ho, Wo, Wq,
                                 &dw[0, 0], ntaps)
            n0 += m
