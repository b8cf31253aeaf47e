r"""Gradient scale under stride: the overlap analysis of strided windows.

With a :math:`k_h \times k_w` window moved by a stride :math:`s_h \times s_w`,
the input positions of a convolution or pooling layer take part in different
numbers of windows. The forward pass does not notice, but the backward pass
sums one contribution per window, so with a flat filter the input gradient is
larger where more windows overlap (4 times larger at a 3x3/stride-2 window's
corner than at its centre). This module computes that *overlap count* ("the
multiplication count"), its periodic cell, and the two
normalisations of it:

1. divide the whole input gradient by one scalar, :func:`correction_factor`;
2. rescale each filter tap by the inverse of its overlap, :func:`filter_rescale`.

Conventions
-----------
Windows start at padded coordinate ``j * stride`` for ``j = 0 .. n_out - 1``,
``n_out = 1 + (n + 2*pad - kernel) // stride`` (floor, as PyTorch; see
:func:`convnet._checks.output_size`). Input position ``i`` sits at padded
coordinate ``p = i + pad``. Away from the borders the count along one axis
depends only on the phase ``r = p % s``:

.. math::

    c_r = \#\{m \in \mathbb{Z} : p - k < m s \le p\}
        = \left\lceil \frac{k - r}{s} \right\rceil, \qquad r = 0, \dots, s - 1,

and the 2-D count is the outer product :math:`c^{(h)}_r c^{(w)}_q`. Phase 0 is
a window's top-left corner, so for a 3x3 window with stride 2, ``c = [2, 1]``
and the cell is ``[[4, 2], [2, 1]]`` as in the worked example of the analysis. When the kernel is
smaller than the stride some phases are covered by no window (``c_r = 0``).

Run ``python -m convnet stride`` for the table of factors (kernel 1-7,
stride 1-3).
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from convnet._checks import check_int, output_size

__all__ = [
    "overlap_count",
    "repeated_cell",
    "correction_factor",
    "filter_rescale",
]

LAYERS = ("conv", "avgpool", "maxpool")
MEASURES = ("std", "mad")


# ---------------------------------------------------------------- validation


def _pair(name: str, value, minimum: int) -> tuple[int, int]:
    """An int, or an ``(h, w)`` pair of ints, each at least ``minimum``; returns ``(h, w)``."""
    if isinstance(value, (tuple, list, np.ndarray)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or an (h, w) pair, got {value!r} of length {len(value)}")
        return (check_int(f"{name}[0]", value[0], minimum), check_int(f"{name}[1]", value[1], minimum))
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an int or an (h, w) pair of ints, got {value!r} (str)")
    v = check_int(name, value, minimum)
    return v, v


def _choice(name: str, value, allowed: tuple[str, ...]) -> str:
    """``value`` is one of the strings in ``allowed``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {allowed}, got {value!r} ({type(value).__name__})")
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def _layer_measure(layer, measure) -> tuple[str, str]:
    layer = _choice("layer", layer, LAYERS)
    measure = _choice("measure", measure, MEASURES)
    if layer == "maxpool" and measure == "std":
        raise ValueError("layer='maxpool' needs measure='mad': the std (RMS) of a max-pool gradient depends on "
                         "where the maxima fall (windows may share one), the MAD does not")
    return layer, measure


# ---------------------------------------------------------------- the count map


def _counts_1d(n: int, k: int, s: int, p: int) -> np.ndarray:
    """How many of the windows along one axis cover each of the ``n`` input positions."""
    n_out = output_size(n, k, s, p)
    starts = np.arange(n_out) * s - p
    # Difference array: +1 where a window's clipped range begins, -1 just past its end.
    diff = np.zeros(n + 1, dtype=np.int64)
    np.add.at(diff, np.clip(starts, 0, n), 1)
    np.add.at(diff, np.clip(starts + k, 0, n), -1)
    return np.cumsum(diff[:n])


def _cell_1d(k: int, s: int) -> np.ndarray:
    """Interior count ``c_r = ceil((k - r) / s)`` for each phase ``r = 0 .. s-1``."""
    r = np.arange(s)
    return (k - r + s - 1) // s


def overlap_count(input_hw, kernel, stride, pad=0) -> np.ndarray:
    r"""Number of windows covering each input position (the "multiplication count").

    .. math::

        M[i, j] = \#\{(a, b) : a s_h \le i + p_h < a s_h + k_h,\;
                              b s_w \le j + p_w < b s_w + k_w\},

    over the ``H_out x W_out`` windows of the layer; ``M = c^{(h)} \otimes c^{(w)}``
    is separable. With an all-ones upstream gradient and an all-ones filter,
    ``Conv.backward`` returns exactly this map in every channel, and
    ``AvgPool.backward`` returns it divided by ``k_h * k_w``.

    Parameters
    ----------
    input_hw : int or (int, int)
        Input height and width ``(H, W)``, each >= 1 (an int means ``H = W``).
    kernel : int or (int, int)
        Window size ``(k_h, k_w)``, each >= 1.
    stride : int or (int, int)
        Stride ``(s_h, s_w)``, each >= 1.
    pad : int or (int, int), optional
        Zero padding ``(p_h, p_w)`` on each side, each >= 0. Default 0.
        Padded positions are not part of the result.

    Returns
    -------
    count : ndarray of int64, shape (H, W)
        Positions the floor of the output size leaves out are 0.

    Raises
    ------
    TypeError
        If an argument is not an int or a pair of ints.
    ValueError
        If a value is out of range or the window does not fit the padded input.

    Examples
    --------
    >>> overlap_count(5, 3, 2)
    array([[1, 1, 2, 1, 1],
           [1, 1, 2, 1, 1],
           [2, 2, 4, 2, 2],
           [1, 1, 2, 1, 1],
           [1, 1, 2, 1, 1]])
    """
    H, W = _pair("input_hw", input_hw, 1)
    kh, kw = _pair("kernel", kernel, 1)
    sh, sw = _pair("stride", stride, 1)
    ph, pw = _pair("pad", pad, 0)
    if kh > H + 2 * ph or kw > W + 2 * pw:
        raise ValueError(f"kernel {kh}x{kw} is larger than the padded input {H + 2 * ph}x{W + 2 * pw} "
                         f"(input {H}x{W}, pad {ph}x{pw})")
    return np.outer(_counts_1d(H, kh, sh, ph), _counts_1d(W, kw, sw, pw))


def repeated_cell(kernel, stride) -> np.ndarray:
    r"""The periodic ``(s_h, s_w)`` cell of :func:`overlap_count` away from the borders.

    .. math::

        \mathrm{cell}[r, q] = c^{(h)}_r c^{(w)}_q, \qquad
        c_r = \left\lceil \frac{k - r}{s} \right\rceil .

    Phase: ``cell[r, q]`` is the count at every input position ``(i, j)`` with
    ``(i + p_h) % s_h == r`` and ``(j + p_w) % s_w == q`` (``p`` the padding),
    provided all windows that could cover it exist, i.e.
    ``k_h - 1 <= i + p_h < H_out * s_h`` (likewise for ``j``). Phase ``(0, 0)``
    is a window's top-left corner, so the entries sum to ``k_h * k_w`` and
    the cell's largest entry comes first.

    Parameters
    ----------
    kernel : int or (int, int)
        Window size ``(k_h, k_w)``, each >= 1.
    stride : int or (int, int)
        Stride ``(s_h, s_w)``, each >= 1.

    Returns
    -------
    cell : ndarray of int64, shape (s_h, s_w)
        Entries are 0 at phases no window covers (kernel smaller than stride).

    Examples
    --------
    >>> repeated_cell(3, 2)
    array([[4, 2],
           [2, 1]])
    """
    kh, kw = _pair("kernel", kernel, 1)
    sh, sw = _pair("stride", stride, 1)
    return np.outer(_cell_1d(kh, sh), _cell_1d(kw, sw)).astype(np.int64)


# ---------------------------------------------------------------- the factors


def _filter_value(kh: int, kw: int, channels: int, layer: str) -> float:
    """The value of every tap of the flat filter the factor assumes."""
    if layer == "conv":
        # Flat filter of shape (C, kh, kw) with unit l2 norm.
        return 1.0 / math.sqrt(channels * kh * kw)
    # Pooling works per channel; the mean filter (and max pooling's unit routing, see below).
    return 1.0 / (kh * kw)


def correction_factor(kernel, stride, channels=1, layer="conv", measure="std") -> float:
    r"""The scalar to divide a strided layer's input gradient by (the first method).

    Model: the upstream gradient is all ones and the filter is flat, so the
    input gradient at a position is (number of windows covering it) x (filter
    value) and is periodic with :func:`repeated_cell`. The factor is a scale
    measure of that gradient over one cell.

    ``measure='std'`` -- the root mean square over the cell,

    .. math::

        f_\mathrm{std} = v \sqrt{\frac{1}{s_h s_w} \sum_{r, q} \mathrm{cell}[r, q]^2}.

    The analysis calls it "Std": its gradients are modelled as zero-mean, so the
    standard deviation is the RMS about zero. It is *not* the sample standard
    deviation of the cell: for 3x3, stride 2 the analysis computes
    :math:`\sqrt{(4^2 + 2^2 + 2^2 + 1^2)/4} = 5/2`, and with the unit-norm
    filter (:math:`v = 1/3`) the factor is :math:`5/6`.

    ``measure='mad'`` -- the mean absolute deviation proposed for max
    pooling, :math:`\mathrm{MAD}(x) = \frac1N \sum_i |x_i - E[x]|`, taken about
    the gradient's mean :math:`E[x] = 0` under the same zero-mean (now
    Laplacian) hypothesis, i.e. the mean absolute value over the cell:

    .. math::

        f_\mathrm{mad} = v \frac{1}{s_h s_w} \sum_{r, q} |\mathrm{cell}[r, q]|
                       = v \frac{k_h k_w}{s_h s_w}.

    (Centring on the cell's own mean instead would make every stride-1
    factor 0, since the stride-1 cell is constant, and could not normalise.)

    The filter value :math:`v` depends on ``layer``:

    - ``'conv'``: a flat filter of shape ``(channels, k_h, k_w)`` with unit
      l2 norm, :math:`v = 1/\sqrt{C k_h k_w}`; so
      :math:`f_\mathrm{std} = \mathrm{RMS}(\mathrm{cell})/\sqrt{C k_h k_w}` and
      at stride 1 :math:`f_\mathrm{std} = \sqrt{k_h k_w / C}` (not 1: the
      all-ones, flat-filter model adds the window's contributions coherently).
    - ``'avgpool'``: the mean filter, :math:`v = 1/(k_h k_w)`; each channel is
      pooled alone, so ``channels`` does not change the factor. At stride 1
      the factor is 1.
    - ``'maxpool'`` (``measure='mad'`` only): each window sends its whole
      upstream gradient (1) to one position, its maximum. Which position
      depends on the data and several windows may pick the same one, so the
      RMS is data dependent and ``measure='std'`` is refused. The absolute
      gradient is conserved, though: the interior holds one window per
      :math:`s_h s_w` positions, so wherever the maxima fall
      :math:`f_\mathrm{mad} = 1/(s_h s_w)`, the same as average pooling.

    Parameters
    ----------
    kernel : int or (int, int)
        Window size ``(k_h, k_w)``, each >= 1.
    stride : int or (int, int)
        Stride ``(s_h, s_w)``, each >= 1.
    channels : int, optional
        Input channels ``C`` >= 1 of the convolution's filter. Default 1.
    layer : {'conv', 'avgpool', 'maxpool'}, optional
        Default ``'conv'``.
    measure : {'std', 'mad'}, optional
        Default ``'std'``; ``'maxpool'`` requires ``'mad'``.

    Returns
    -------
    factor : float
        Always > 0: phase (0, 0), a window's corner, is always covered.

    Raises
    ------
    TypeError
        If kernel, stride or channels is not an int (or pair of ints), or
        layer or measure is not a string.
    ValueError
        If a value is out of range, layer or measure is unknown, or
        ``layer='maxpool'`` is asked for ``measure='std'``.

    Examples
    --------
    >>> print(f"{correction_factor(3, 2):.6f}")  # 5/6
    0.833333
    >>> print(f"{correction_factor(3, 2, layer='avgpool'):.6f}")  # (5/2) / 9
    0.277778
    """
    kh, kw = _pair("kernel", kernel, 1)
    sh, sw = _pair("stride", stride, 1)
    channels = check_int("channels", channels, 1)
    layer, measure = _layer_measure(layer, measure)
    v = _filter_value(kh, kw, channels, layer)
    cell = repeated_cell((kh, kw), (sh, sw)).astype(np.float64)
    if measure == "std":
        return float(v * np.sqrt(np.mean(cell ** 2)))
    return float(v * np.mean(np.abs(cell)))


def filter_rescale(kernel, stride) -> np.ndarray:
    r"""Per-tap filter factors of the second method: 1 / (windows sharing the tap's input).

    Filter tap ``(a, b)`` of the window starting at phase 0 reads the input
    position of phase ``(a % s_h, b % s_w)``, which (away from the borders)
    lies in ``cell[a % s_h, b % s_w]`` windows. Scaling the tap by

    .. math::

        R[a, b] = \frac{1}{c^{(h)}_{a \bmod s_h}\, c^{(w)}_{b \bmod s_w}}

    makes the flat-filter input gradient uniform: a position of phase ``r``
    is reached by exactly :math:`c_r` taps (those with ``a % s == r``), each
    scaled by :math:`1/c_r`, so it receives ``1 x`` the filter value.
    Positions no window covers (kernel smaller than stride) stay 0.

    For 3x3, stride 2: corners 1/4, edges 1/2, centre 1. At stride 1 every
    tap is shared by :math:`k_h k_w` windows, so :math:`R = 1/(k_h k_w)`
    everywhere.

    Parameters
    ----------
    kernel : int or (int, int)
        Window size ``(k_h, k_w)``, each >= 1.
    stride : int or (int, int)
        Stride ``(s_h, s_w)``, each >= 1.

    Returns
    -------
    rescale : ndarray of float64, shape (k_h, k_w)
        Multiply the filter (each channel and output filter) by it elementwise.
    """
    kh, kw = _pair("kernel", kernel, 1)
    sh, sw = _pair("stride", stride, 1)
    ch, cw = _cell_1d(kh, sh), _cell_1d(kw, sw)
    # Every tap's phase a % s is < k, so its count is >= 1: no division by zero.
    return 1.0 / np.outer(ch[np.arange(kh) % sh], cw[np.arange(kw) % sw]).astype(np.float64)


def _factor_squared(kernel, stride, channels, layer, measure) -> Fraction:
    """``correction_factor(...) ** 2`` as an exact fraction (it is always rational)."""
    kh, kw = _pair("kernel", kernel, 1)
    sh, sw = _pair("stride", stride, 1)
    cell = repeated_cell((kh, kw), (sh, sw))
    n = sh * sw
    if measure == "std":
        scale2 = Fraction(int(np.sum(cell ** 2)), n)
    else:
        scale2 = Fraction(int(np.sum(cell)), n) ** 2
    v2 = Fraction(1, channels * kh * kw) if layer == "conv" else Fraction(1, (kh * kw) ** 2)
    return scale2 * v2


def _exact_text(f2: Fraction) -> str:
    """``5/6`` when the square root is rational, else ``sqrt(25/72)``."""
    rn, rd = math.isqrt(f2.numerator), math.isqrt(f2.denominator)
    if rn * rn == f2.numerator and rd * rd == f2.denominator:
        return str(Fraction(rn, rd))
    return f"sqrt({f2})"
