r"""Convolution written as correlation: the building blocks of conv backward's three views.

A convolution layer (PyTorch's ``conv2d``, :class:`convnet.layers.Conv`) is a
*valid cross-correlation* of its zero-padded input with its filters, read every
``stride`` positions. Its backward pass can be written with the same operation:

- ``dx`` is the *full* correlation of the zero-inserted ("dilated") upstream
  gradient with the filters rotated by 180 degrees, that is a full
  convolution with the filters, cropped by the padding;
- ``dw`` is the valid correlation of the padded input with the dilated
  gradient: the gradient plays the filter and slides over the input;
- ``db`` is the sum of the upstream gradient.

The zero insertion is the trick that reduces a strided layer to a stride-1
one: a stride-``s`` output is the stride-1 output read every ``s`` positions,
so its gradient is the stride-1 output's gradient with zeros where nothing was
read, including the last rows and columns when the stride does not divide
``H + 2*pad - kernel`` (pass ``size`` to :func:`dilate`).
:meth:`convnet.layers.Conv.backward_alt` computes the layer's gradients this
way; :meth:`convnet.layers.Conv.backward` sprays each output gradient over the
window it read, and both return the same numbers.

Example: a 3x3 filter over a 5x5 input with stride 2 gives a 2x2 output. Its
gradient, zero-inserted and padded by ``kernel - 1 = 2`` on every side, is the
7x7 array the full correlation slides the rotated filter over:

>>> import numpy as np
>>> from convnet.correlate import dilate, full_correlate2d, rot180
>>> dout = np.array([[[[1., 2.], [3., 4.]]]])        # (N, F, H_out, W_out) = (1, 1, 2, 2)
>>> d = dilate(dout, 2)
>>> d[0, 0]
array([[1., 0., 2.],
       [0., 0., 0.],
       [3., 0., 4.]])
>>> np.pad(d[0, 0], 2).astype(int)
array([[0, 0, 0, 0, 0, 0, 0],
       [0, 0, 0, 0, 0, 0, 0],
       [0, 0, 1, 0, 2, 0, 0],
       [0, 0, 0, 0, 0, 0, 0],
       [0, 0, 3, 0, 4, 0, 0],
       [0, 0, 0, 0, 0, 0, 0],
       [0, 0, 0, 0, 0, 0, 0]])
>>> w = np.arange(9.).reshape(1, 1, 3, 3)           # (F, C, HH, WW)
>>> dx = full_correlate2d(d, rot180(w).transpose(1, 0, 2, 3))
>>> dx[0, 0].astype(int)
array([[ 0,  1,  2,  2,  4],
       [ 3,  4, 11,  8, 10],
       [ 6, 10, 26, 18, 24],
       [ 9, 12, 27, 16, 20],
       [18, 21, 48, 28, 32]])

By hand, the centre ``dx[0, 0, 2, 2]`` lies in all four windows, at tap (2, 2)
of the first, (2, 0) of the second, (0, 2) of the third and (0, 0) of the
last: ``1*8 + 2*6 + 3*2 + 4*0 = 26``. Spraying each output gradient over the
window it read (:meth:`convnet.layers.Conv.backward`) gives the same array:

>>> from convnet.layers import Conv
>>> _, cache = Conv.forward(np.zeros((1, 1, 5, 5)), w, np.zeros(1), {"stride": 2, "pad": 0})
>>> np.array_equal(dx, Conv.backward(dout, cache)[0])
True

Every function validates its arguments with :mod:`convnet._checks` (a
``TypeError`` or ``ValueError`` naming the values) and is vectorised: a Python
loop runs over the filter taps or over the output positions, whichever is
shorter, each step one BLAS contraction over the batch and the channels.
"""
from __future__ import annotations

import numpy as np

from convnet import _checks

__all__ = ["dilate", "rot180", "correlate2d", "full_correlate2d", "AvgPoolAsConv"]


def _pair(name: str, value) -> tuple[int, int]:
    """An int >= 1, or a pair (h, w) of them, as a pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
        return (_checks.check_int(f"{name}[0]", value[0], 1), _checks.check_int(f"{name}[1]", value[1], 1))
    v = _checks.check_int(name, value, 1)
    return v, v


def _spatial(name: str, a) -> np.ndarray:
    """A float array of rank >= 2 whose last two axes (H, W) are not empty."""
    _checks.check_array(name, a)
    if a.ndim < 2:
        raise ValueError(f"{name} must have rank >= 2 (..., H, W), got shape {a.shape}")
    if a.shape[-2] == 0 or a.shape[-1] == 0:
        raise ValueError(f"{name} has an empty spatial dimension (shape {a.shape})")
    return a


def dilate(dout, stride, size=None):
    """Insert ``stride - 1`` zeros between neighbouring entries of the last two axes.

    Parameters
    ----------
    dout : ndarray of shape (..., H_out, W_out), float32 or float64
        Typically the upstream gradient (N, F, H_out, W_out) of a strided layer.
    stride : int >= 1 or pair (sh, sw) of them
    size : pair of ints (Hd, Wd), optional
        Shape of the result's last two axes, at least the dilated size
        ``((H_out - 1) * sh + 1, (W_out - 1) * sw + 1)`` (the default); the extra
        rows and columns at the bottom and right are zeros. For a layer's
        gradient pass its stride-1 output size ``(H + 2*pad - HH + 1, W + 2*pad - WW + 1)``:
        positions no strided window reads then get zero gradient.

    Returns
    -------
    ndarray of shape (..., Hd, Wd), dout's dtype
        ``out[..., i * sh, j * sw] = dout[..., i, j]``, zero elsewhere.

    Examples
    --------
    >>> dilate(np.array([[1., 2.], [3., 4.]]), (1, 2), size=(3, 4))
    array([[1., 0., 2., 0.],
           [3., 0., 4., 0.],
           [0., 0., 0., 0.]])
    """
    _spatial("dout", dout)
    sh, sw = _pair("stride", stride)
    H, W = dout.shape[-2:]
    Hd, Wd = (H - 1) * sh + 1, (W - 1) * sw + 1
    if size is not None:
        th, tw = _pair("size", size)
        if th < Hd or tw < Wd:
            raise ValueError(f"size ({th}, {tw}) is smaller than the dilated gradient {Hd}x{Wd} "
                             f"(dout {H}x{W}, stride ({sh}, {sw}))")
        Hd, Wd = th, tw
    out = np.zeros(dout.shape[:-2] + (Hd, Wd), dtype=dout.dtype)
    out[..., :(H - 1) * sh + 1:sh, :(W - 1) * sw + 1:sw] = dout
    return out


def rot180(w):
    """The filters rotated by 180 degrees: both spatial axes reversed.

    Parameters
    ----------
    w : ndarray of shape (..., HH, WW), float32 or float64

    Returns
    -------
    ndarray of shape (..., HH, WW)
        ``out[..., a, b] = w[..., HH - 1 - a, WW - 1 - b]``; a view of ``w``.

    Examples
    --------
    >>> rot180(np.array([[1., 2., 3.], [4., 5., 6.]]))
    array([[6., 5., 4.],
           [3., 2., 1.]])
    """
    _spatial("w", w)
    return w[..., ::-1, ::-1]


def _geometry(x, w, stride=1, pad=0) -> _checks.ConvGeometry:
    """Validate x (N, C, H, W) and w (F, C, HH, WW) as a correlation's input and filters."""
    _checks.check_array("x", x, 4)
    _checks.check_array("w", w, 4)
    _checks.check_same_dtype(x=x, w=w)
    stride = _checks.check_int("stride", stride, 1)
    # conv_args with a zero bias checks the ranks, the channels, empty axes and the kernel size.
    return _checks.conv_args(x, w, np.zeros(w.shape[0], dtype=x.dtype), {"stride": stride, "pad": pad})


def _correlate(x, w, stride, H_out, W_out):
    """Valid cross-correlation of validated arrays; see :func:`correlate2d`."""
    N, C = x.shape[:2]
    F, _, HH, WW = w.shape
    s, P, K = stride, H_out * W_out, C * HH * WW
    if HH * WW <= P:
        # One GEMM (F, C) @ (C, P) per tap and image, over every output position at once.
        out = np.zeros((N, F, P), dtype=x.dtype)
        term = np.empty_like(out)
        xs = np.empty((N, C, H_out, W_out), dtype=x.dtype)
        for a in range(HH):
            for b in range(WW):
                # A plain copy first: the GEMM wants the positions contiguous (faster than transposing them).
                xs[...] = x[:, :, a:a + s * (H_out - 1) + 1:s, b:b + s * (W_out - 1) + 1:s]
                np.matmul(w[:, :, a, b], xs.reshape(N, C, P), out=term)
                out += term
        return out.reshape(N, F, H_out, W_out)
    # Fewer outputs than taps (dw's correlation, where the gradient is the filter): one GEMM per output.
    wmat = np.ascontiguousarray(w).reshape(F, K)
    out = np.empty((H_out, W_out, N, F), dtype=x.dtype)
    win = np.empty((N, C, HH, WW), dtype=x.dtype)
    for i in range(H_out):
        for j in range(W_out):
            win[...] = x[:, :, i * s:i * s + HH, j * s:j * s + WW]
            np.matmul(win.reshape(N, K), wmat.T, out=out[i, j])
    return np.ascontiguousarray(out.transpose(2, 3, 0, 1))


def correlate2d(x, w, stride=1):
    """Valid cross-correlation of a batch of images with a bank of filters (what ``conv2d`` computes).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    w : ndarray of shape (F, C, HH, WW), x's dtype
        ``HH <= H`` and ``WW <= W``.
    stride : int >= 1

    Returns
    -------
    out : ndarray of shape (N, F, H_out, W_out), x's dtype
        ``out[n, f, i, j] = sum over c, a, b of x[n, c, i*stride + a, j*stride + b] * w[f, c, a, b]``,
        ``H_out = 1 + (H - HH) // stride``, likewise W_out.

    Examples
    --------
    >>> correlate2d(np.arange(4.).reshape(1, 1, 1, 4), np.array([[[[1., 0., -1.]]]]))
    array([[[[-2., -2.]]]])
    """
    g = _geometry(x, w, stride)
    return _correlate(x, w, g.stride, g.H_out, g.W_out)


def full_correlate2d(x, w):
    """Full cross-correlation: every placement of the filter that overlaps the input.

    The input is zero-padded by ``HH - 1`` rows and ``WW - 1`` columns on each
    side first. With rotated filters, ``full_correlate2d(x, rot180(w))`` is the
    full convolution of ``x`` with ``w``.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    w : ndarray of shape (F, C, HH, WW), x's dtype

    Returns
    -------
    out : ndarray of shape (N, F, H + HH - 1, W + WW - 1), x's dtype
        ``out[n, f, i, j] = sum over c, a, b of x[n, c, i + a - HH + 1, j + b - WW + 1] * w[f, c, a, b]``,
        the terms with an index outside x being zero.

    Examples
    --------
    >>> full_correlate2d(np.array([[[[1., 2.]]]]), np.array([[[[1., 10.]]]]))
    array([[[[10., 21.,  2.]]]])
    """
    _checks.check_array("w", w, 4)
    HH, WW = w.shape[2:]
    # Pad by the larger kernel side in validation only: it makes every kernel fit.
    _geometry(x, w, pad=max(HH, WW, 1) - 1)
    xp = np.pad(x, ((0, 0), (0, 0), (HH - 1, HH - 1), (WW - 1, WW - 1)))
    H, W = x.shape[2:]
    return _correlate(xp, w, 1, H + HH - 1, W + WW - 1)


def _mean_filter(g: _checks.PoolGeometry, dtype) -> np.ndarray:
    """The (1, 1, ph, pw) filter of one window's mean."""
    return np.full((1, 1, g.pool_height, g.pool_width), 1.0 / (g.pool_height * g.pool_width), dtype=dtype)


class AvgPoolAsConv:
    """Average pooling as a depthwise convolution: each channel correlated with a mean filter.

    Same contract, same cache and same numbers (up to rounding) as
    :class:`convnet.layers.AvgPool`, zero padding counted in the divisor: a
    window of ``ph * pw`` taps of value ``1 / (ph * pw)``, applied to each of the
    N*C planes on its own. The backward pass is the convolution's: the full
    correlation of the zero-inserted gradient with the rotated filter (a mean
    filter is its own rotation), cropped by the padding.
    """

    @staticmethod
    def forward(x, pool_param):
        """Average-pool forward pass by correlation with the mean filter.

        Parameters
        ----------
        x : ndarray of shape (N, C, H, W)
        pool_param : dict
            As :meth:`convnet.layers.AvgPool.forward`.

        Returns
        -------
        out : ndarray of shape (N, C, H_out, W_out)
        cache : tuple ``(x, pool_param)``, the same as AvgPool's
        """
        g = _checks.pool_args(x, pool_param, "AvgPoolAsConv")
        p = g.pad
        planes = x.reshape(g.N * g.C, 1, g.H, g.W)
        planes = np.pad(planes, ((0, 0), (0, 0), (p, p), (p, p)))
        out = _correlate(planes, _mean_filter(g, x.dtype), g.stride, g.H_out, g.W_out)
        return out.reshape(g.N, g.C, g.H_out, g.W_out), (x, pool_param)

    @staticmethod
    def backward(dout, cache):
        """Average-pool backward pass as a full correlation of the dilated gradient.

        Parameters
        ----------
        dout : ndarray of shape (N, C, H_out, W_out)
        cache : tuple
            What :meth:`forward` (or :meth:`convnet.layers.AvgPool.forward`) returned.

        Returns
        -------
        dx : ndarray of shape (N, C, H, W)
        """
        x, pool_param = _checks.check_cache(cache, 2, "AvgPoolAsConv")
        g = _checks.pool_args(x, pool_param, "AvgPoolAsConv")
        _checks.check_dout(dout, (g.N, g.C, g.H_out, g.W_out), x.dtype, "AvgPoolAsConv")
        p, ph, pw = g.pad, g.pool_height, g.pool_width
        stride1 = (g.H + 2 * p - ph + 1, g.W + 2 * p - pw + 1)
        d = dilate(dout.reshape(g.N * g.C, 1, g.H_out, g.W_out), g.stride, size=stride1)
        dxp = full_correlate2d(d, rot180(_mean_filter(g, x.dtype)))
        return dxp[:, 0, p:p + g.H, p:p + g.W].reshape(g.N, g.C, g.H, g.W)
