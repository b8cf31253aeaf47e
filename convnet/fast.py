"""Fast convolution and pooling layers with the naive layers' API.

``FastConv``, ``FastMaxPool`` and ``FastAvgPool`` take the same arguments and
return the same results as :class:`convnet.layers.Conv`, ``MaxPool`` and
``AvgPool``. A fast layer's cache is a small object (not a tuple) that only its
own ``backward`` accepts.

How it works
------------
- Convolution: im2col into a column buffer of shape ``(C*HH*WW, n*H_out*W_out)``
  for a chunk of ``n`` images, one BLAS GEMM (numpy ``matmul``) per chunk, and
  col2im for ``dx``; the backward pass recomputes the columns chunk by chunk
  (dw and dx need two more GEMMs; for thin layers, ``C*HH*WW <= 32``, they are
  per-image GEMMs that read dout as it lies). Chunks hold about 2 MiB of
  columns (cache sized) and never more than the byte budget, so extra memory
  does not grow with N (see :func:`set_column_budget`). BLAS supplies the
  threads; im2col, col2im and the GEMM result's move to NCHW (with the bias)
  run on the calling thread (see ``_CONV_KERNEL_THREADS``).
- Threads: a convolution with enough work splits its batch into
  :func:`get_num_threads` parts, each run by one thread through the whole
  pipeline above with BLAS limited to one thread meanwhile (measured on 2
  cores: 1.7-1.9x faster than one pipeline on 2-thread BLAS, whose second
  thread gains little on chunk-sized GEMMs and slows the kernels in between).
  Each part gets an equal share of the column budget.
- 3x3 stride-1 convolutions with at least 16 input and output channels use
  Winograd instead: F(4x4, 3x3) (4x fewer multiplications than im2col) or,
  where partial edge tiles would waste that, F(2x2, 3x3) (2.25x fewer). Each
  (m+2) x (m+2) input tile is transformed (``B^T d B``), (m+2)^2 batched GEMMs
  ``(F, C) @ (C, P)`` multiply by the transformed filters, and ``A^T m A``
  gives each m x m output tile. The backward pass runs the adjoints of the
  same transforms (dx) and the GEMMs against the input tiles (dw). The batch
  is chunked as for im2col. See :func:`set_conv_algorithm` to force an
  algorithm (F(4x4, 3x3) rounds float32 about 5x more coarsely than im2col).
- Pooling: direct loops over the ``N*C`` planes, split across OpenMP threads
  (``OMP_NUM_THREADS`` or the usable CPUs) when the input has at least 65536
  elements; max pooling keeps the flat index ``h*W + w`` of each window's first
  maximum (row-major, as PyTorch; a NaN wins its window) for the backward pass.
  :func:`set_num_threads` changes the thread count at run time.

Kernels live in :mod:`convnet._fast` (Cython, fused float32/float64, ``nogil``,
OpenMP ``prange``). They never validate: every wrapper here checks its input
with :mod:`convnet._checks` first, makes it C-contiguous and allocates the output.

Environment variables (read once, at import)
--------------------------------------------
CONVNET_PUREPYTHON=1
    Do not use the compiled kernels; use the vectorised numpy implementation.
CONVNET_REQUIRE_CYTHON=1
    Importing this module raises ``ImportError`` when the compiled kernels cannot
    be imported (unless ``CONVNET_PUREPYTHON=1`` is also set). CI sets it so a
    missing build cannot pass silently.
CONVNET_COLUMN_BUDGET=<bytes>
    Initial column-buffer budget for the convolution (default 64 MiB).

Attributes
----------
HAVE_CYTHON : bool
    True when the compiled kernels are in use.
"""
from __future__ import annotations

import os
from functools import partial

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from convnet import _checks

__all__ = [
    "FastConv", "FastMaxPool", "FastAvgPool", "HAVE_CYTHON",
    "set_column_budget", "get_column_budget", "conv_chunk_size", "im2col", "col2im",
    "set_num_threads", "get_num_threads", "set_conv_algorithm", "get_conv_algorithm",
    "CONV_ALGORITHMS", "winograd_chunk_size",
]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


_PURE = _env_flag("CONVNET_PUREPYTHON")
_REQUIRE = _env_flag("CONVNET_REQUIRE_CYTHON")

_cim2col = _cpool = _cwino = None
_IMPORT_ERROR = None
if not _PURE:
    try:
        from convnet._fast import _im2col as _cim2col  # noqa: F811
        from convnet._fast import _pool as _cpool  # noqa: F811
        from convnet._fast import _winograd as _cwino  # noqa: F811
    except ImportError as exc:  # the extension was not built (or failed to load)
        _cim2col = _cpool = _cwino = None
        _IMPORT_ERROR = exc
HAVE_CYTHON = _cim2col is not None and _cpool is not None and _cwino is not None

if _REQUIRE and not _PURE and not HAVE_CYTHON:
    raise ImportError(
        "CONVNET_REQUIRE_CYTHON=1 but the compiled kernels convnet._fast._im2col/_pool/_winograd cannot be "
        f"imported ({_IMPORT_ERROR}); build them with `python setup.py build_ext --inplace` "
        "or `pip install .`, or set CONVNET_PUREPYTHON=1 to use numpy"
    )

# ---------------------------------------------------------------- threads


def _default_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


_DEFAULT_THREADS = _default_threads()
_MAX_THREADS = _DEFAULT_THREADS
# Below this many elements a kernel runs on one thread: waking (and, on a busy
# machine, waiting for) a second thread costs more than the work.
_PARALLEL_MIN_WORK = 1 << 16


def _threads(work: int) -> int:
    return _MAX_THREADS if work >= _PARALLEL_MIN_WORK else 1


def set_num_threads(n=None) -> int:
    """Set how many OpenMP threads the compiled kernels may use; returns the previous count.

    Parameters
    ----------
    n : int >= 0 or None
        Thread count for the pooling kernels (OpenMP) and for the convolution,
        which splits a large enough batch into ``n`` parts run on ``n`` threads,
        each with single-threaded BLAS (through threadpoolctl, for the duration
        of the call; without threadpoolctl the batch is not split). ``None`` or
        ``0`` restores the default: ``OMP_NUM_THREADS`` if set at import, else
        the number of usable CPUs. numpy's BLAS thread count outside the
        convolution is not affected (use ``threadpoolctl`` for it).

    Raises
    ------
    TypeError
        If n is not an int (bool included) or None.
    ValueError
        If n is negative.
    """
    global _MAX_THREADS
    if n is None:
        n = 0
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads: n must be an int >= 0 or None, got {type(n).__name__} {n!r}")
    if n < 0:
        raise ValueError(f"set_num_threads: n must be >= 0 (0 or None: default {_DEFAULT_THREADS}), got {n}")
    previous = _MAX_THREADS
    _MAX_THREADS = int(n) if n else _DEFAULT_THREADS
    return previous


def get_num_threads() -> int:
    """Number of OpenMP threads the compiled kernels may use (see :func:`set_num_threads`)."""
    return _MAX_THREADS


# ---------------------------------------------------------------- column budget

DEFAULT_COLUMN_BUDGET = 64 * 2**20


def _parse_budget(value) -> int:
    try:
        return _checks.check_int("column budget", int(value) if isinstance(value, str) else value, 1)
    except ValueError as exc:
        raise ValueError(f"CONVNET_COLUMN_BUDGET / column budget must be a positive integer "
                         f"number of bytes, got {value!r}") from exc


_column_budget = (_parse_budget(os.environ["CONVNET_COLUMN_BUDGET"])
                  if os.environ.get("CONVNET_COLUMN_BUDGET", "").strip() else DEFAULT_COLUMN_BUDGET)


def set_column_budget(nbytes: int) -> int:
    """Set the byte budget of the convolution's column buffers; returns the previous one.

    Parameters
    ----------
    nbytes : int >= 1
        Upper bound on the bytes held by the im2col column buffers of one call
        (forward: one buffer; backward: columns and their gradient). The batch is
        processed in chunks of as many images as fit (and at most about 2 MiB of
        columns per chunk, for cache locality; the Winograd path's transformed
        tiles count likewise); a single image always fits, so
        the bound is ``max(nbytes, one image's buffers)``.
    """
    global _column_budget
    nbytes = _checks.check_int("nbytes", nbytes, 1)
    previous, _column_budget = _column_budget, nbytes
    return previous


def get_column_budget() -> int:
    """Current column-buffer budget in bytes (default 64 MiB or ``CONVNET_COLUMN_BUDGET``)."""
    return _column_budget


# Chunks are sized for the cache, not only for the budget: measured on C1-C4
# (single thread), 0.5-2 MiB of columns per chunk runs 20-50% faster than one
# 64 MiB chunk because im2col's output is still cached when the GEMM reads it.
_CHUNK_TARGET = 2 * 2**20


def conv_chunk_size(g: _checks.ConvGeometry, itemsize: int, buffers: int = 1) -> int:
    """Images per chunk: ``buffers`` column buffers fit in the budget (and ~2 MiB each); at least 1.

    One image's column buffer holds ``C*HH*WW * H_out*W_out`` elements.
    """
    per_image = g.C * g.HH * g.WW * g.H_out * g.W_out * itemsize
    limit = min(_column_budget // buffers, _CHUNK_TARGET)
    return int(max(1, min(g.N, limit // per_image)))


# ---------------------------------------------------------------- im2col / col2im


def _im2col_numpy(x, cols3, HH, WW, stride, pad, H_out, W_out):
    """cols3[(c, kh, kw), n, (i, j)] = padded x[n, c, i*stride + kh, j*stride + kw]."""
    N, C = x.shape[:2]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    win = sliding_window_view(xp, (HH, WW), axis=(2, 3))[:, :, ::stride, ::stride]
    # win: (N, C, H_out, W_out, HH, WW) -> (C, HH, WW, N, H_out, W_out)
    cols3.reshape(C, HH, WW, N, H_out, W_out)[...] = win.transpose(1, 4, 5, 0, 2, 3)


def _col2im_numpy(cols3, dx, HH, WW, stride, pad, H_out, W_out):
    """Adjoint of :func:`_im2col_numpy`: dx (zeroed here) accumulates every column entry."""
    N, C, H, W = dx.shape
    dxp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=dx.dtype)
    c6 = cols3.reshape(C, HH, WW, N, H_out, W_out)
    hspan, wspan = stride * (H_out - 1) + 1, stride * (W_out - 1) + 1
    for kh in range(HH):  # a loop over kernel offsets, each step vectorised over all elements
        for kw in range(WW):
            dxp[:, :, kh:kh + hspan:stride, kw:kw + wspan:stride] += c6[:, kh, kw].transpose(1, 0, 2, 3)
    dx[...] = dxp[:, :, pad:pad + H, pad:pad + W]


# im2col/col2im run on one thread between multi-threaded BLAS calls: OpenMP
# workers spinning after a prange fight OpenBLAS's threads for the two cores
# (measured on an idle 2-core machine: C2 forward+backward 39 ms this way,
# 460 ms with 2 OpenMP threads in im2col/col2im). The kernels take nthreads.
_CONV_KERNEL_THREADS = 1


def _im2col_into(x, cols3, g):
    if HAVE_CYTHON:
        _cim2col.im2col(x, cols3, g.HH, g.WW, g.stride, g.pad, g.H_out, g.W_out, _CONV_KERNEL_THREADS)
    else:
        _im2col_numpy(x, cols3, g.HH, g.WW, g.stride, g.pad, g.H_out, g.W_out)


def _col2im_into(cols3, dx, g):
    # dx is overwritten. The kernel zeroes each plane just before accumulating into it:
    # measured faster than np.zeros' lazily zeroed pages, whose first touches (page
    # faults on fresh memory) are what costs on large arrays.
    if HAVE_CYTHON:
        _cim2col.col2im(cols3, dx, g.HH, g.WW, g.stride, g.pad, g.H_out, g.W_out, _CONV_KERNEL_THREADS, True)
    else:
        _col2im_numpy(cols3, dx, g.HH, g.WW, g.stride, g.pad, g.H_out, g.W_out)


def _geometry(x, kernel_height, kernel_width, stride, pad):
    # Reuse conv_args for validation with a zero-size-in-memory dummy filter.
    _checks.check_array("x", x, 4)
    kh = _checks.check_int("kernel_height", kernel_height, 1)
    kw = _checks.check_int("kernel_width", kernel_width, 1)
    w = np.broadcast_to(np.zeros((), dtype=x.dtype), (1, x.shape[1], kh, kw))
    b = np.zeros(1, dtype=x.dtype)
    return _checks.conv_args(x, w, b, {"stride": stride, "pad": pad})


def im2col(x, kernel_height, kernel_width, stride=1, pad=0):
    """Unfold every receptive field of ``x`` into a column.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    kernel_height, kernel_width : int >= 1
        At most ``H + 2*pad`` and ``W + 2*pad``.
    stride : int >= 1
    pad : int >= 0
        Zero padding on every side.

    Returns
    -------
    cols : ndarray of shape (C*kernel_height*kernel_width, N*H_out*W_out)
        ``cols[(c*kh_size + kh)*kw_size + kw, (n*H_out + i)*W_out + j] =
        xpad[n, c, i*stride + kh, j*stride + kw]``, x's dtype.
    """
    g = _geometry(x, kernel_height, kernel_width, stride, pad)
    x = np.ascontiguousarray(x)
    K, P = g.C * g.HH * g.WW, g.H_out * g.W_out
    cols = np.empty((K, g.N * P), dtype=x.dtype)
    _im2col_into(x, cols.reshape(K, g.N, P), g)
    return cols


def col2im(cols, x_shape, kernel_height, kernel_width, stride=1, pad=0):
    """Adjoint of :func:`im2col`: add every column entry back at the input position it came from.

    Parameters
    ----------
    cols : ndarray of shape (C*kernel_height*kernel_width, N*H_out*W_out), float32 or float64
    x_shape : tuple of 4 ints (N, C, H, W)
    kernel_height, kernel_width, stride, pad : int
        As :func:`im2col`.

    Returns
    -------
    dx : ndarray of shape x_shape, cols' dtype
        Entries that came from the padding are dropped.
    """
    _checks.check_array("cols", cols, 2)
    if not isinstance(x_shape, tuple) or len(x_shape) != 4:
        raise ValueError(f"x_shape must be a tuple (N, C, H, W), got {x_shape!r}")
    for name, n in zip("NCHW", x_shape):
        _checks.check_int(f"x_shape {name}", n, 1)
    dummy = np.broadcast_to(np.zeros((), dtype=cols.dtype), tuple(int(n) for n in x_shape))
    g = _geometry(dummy, kernel_height, kernel_width, stride, pad)
    K, P = g.C * g.HH * g.WW, g.H_out * g.W_out
    if cols.shape != (K, g.N * P):
        raise ValueError(f"cols has shape {cols.shape}; x_shape {tuple(x_shape)} with kernel "
                         f"{g.HH}x{g.WW}, stride {g.stride}, pad {g.pad} needs ({K}, {g.N * P})")
    cols = np.ascontiguousarray(cols)
    dx = np.empty(dummy.shape, dtype=cols.dtype)
    _col2im_into(cols.reshape(K, g.N, P), dx, g)
    return dx


# ---------------------------------------------------------------- Winograd F(2x2, 3x3), F(4x4, 3x3)


class _Winograd:
    """One Winograd algorithm F(m x m, 3x3) (Lavin & Gray, 2015).

    An m x m output tile is ``A^T [(G g G^T) * (B^T d B)] A`` for the
    (m+2) x (m+2) input patch d; ``k = (m+2)*r + s`` numbers the positions of
    a transformed tile, the rows of the batched GEMMs.
    """

    def __init__(self, m, G, BT, AT):
        self.m, self.alpha = m, m + 2
        self.nk = self.alpha ** 2
        self.G, self.BT, self.AT = (np.array(a, dtype=np.float64) for a in (G, BT, AT))

    def tiles(self, g):
        """Tiles per column and per row of one output plane: (ceil(H_out/m), ceil(W_out/m))."""
        return -(-g.H_out // self.m), -(-g.W_out // self.m)

    def multiplies(self, g):
        """Multiplications per (input, output) channel pair and image: (m+2)^2 per tile."""
        tH, tW = self.tiles(g)
        return self.nk * tH * tW


_WINO2 = _Winograd(
    2, G=[[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
    BT=[[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    AT=[[1, 1, 1, 0], [0, 1, -1, -1]])
# Interpolation points 0, 1, -1, 2, -2 and infinity.
_WINO4 = _Winograd(
    4, G=[[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
          [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
    BT=[[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    AT=[[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]])

CONV_ALGORITHMS = ("auto", "im2col", "winograd", "winograd2", "winograd4")
_conv_algorithm = "auto"
# 'auto' takes Winograd for 3x3 stride-1 layers with at least this many input and
# output channels: with few channels the batched GEMMs are too thin to pay for the
# transforms (measured: C1, C=3 F=32, is 2x slower by Winograd; C2, C=F=64, 2x faster).
_WINOGRAD_MIN_CHANNELS = 16


def set_conv_algorithm(name: str) -> str:
    """Choose how :class:`FastConv` computes a convolution; returns the previous choice.

    Parameters
    ----------
    name : {'auto', 'im2col', 'winograd', 'winograd2', 'winograd4'}
        ``'im2col'``: im2col + GEMM for every layer. ``'winograd2'`` /
        ``'winograd4'``: Winograd F(2x2, 3x3) / F(4x4, 3x3) for every 3x3
        stride-1 layer (any padding), im2col for the others. ``'winograd'``:
        of those two, the one with fewer multiplications for the layer's output
        size (F(4x4, 3x3) unless partial edge tiles waste more than it saves).
        ``'auto'`` (default): ``'winograd'`` for 3x3 stride-1 layers with at
        least 16 input and 16 output channels when the compiled kernels are in
        use, im2col otherwise.

    Notes
    -----
    Winograd adds and subtracts inputs before multiplying, so its rounding
    error is relative to the scale of a whole tile rather than of each output:
    measured max|error| / max|exact| is about 3e-7 (F(2x2, 3x3)) and 5e-6
    (F(4x4, 3x3)) in float32, against up to 1e-6 for im2col; 2e-15 and 7e-15
    in float64. Choose ``'im2col'`` or ``'winograd2'`` where that matters more
    than speed.
    """
    global _conv_algorithm
    if not isinstance(name, str) or name not in CONV_ALGORITHMS:
        raise ValueError(f"conv algorithm must be one of {CONV_ALGORITHMS}, got {name!r}")
    previous, _conv_algorithm = _conv_algorithm, name
    return previous


def get_conv_algorithm() -> str:
    """The current choice of :func:`set_conv_algorithm` (default ``'auto'``)."""
    return _conv_algorithm


def _winograd_for(g: _checks.ConvGeometry):
    """The Winograd algorithm for this layer under the current setting, or None for im2col."""
    if g.HH != 3 or g.WW != 3 or g.stride != 1 or _conv_algorithm == "im2col":
        return None
    if _conv_algorithm == "winograd2":
        return _WINO2
    if _conv_algorithm == "winograd4":
        return _WINO4
    if _conv_algorithm == "auto" and not (HAVE_CYTHON and min(g.C, g.F) >= _WINOGRAD_MIN_CHANNELS):
        return None
    # Ties go to F(2x2, 3x3), the more accurate one.
    return _WINO4 if _WINO4.multiplies(g) < _WINO2.multiplies(g) else _WINO2


def _use_winograd(g: _checks.ConvGeometry) -> bool:
    return _winograd_for(g) is not None


def winograd_chunk_size(g: _checks.ConvGeometry, itemsize: int, share: int = 1, algo=None) -> int:
    """Images per Winograd chunk: its transformed tiles fit in the column budget (and ~1.25 MiB); at least 1.

    One image holds ``(m+2)^2 * (C + F) * ceil(H_out/m) * ceil(W_out/m)``
    transformed elements (input tiles and output tiles; the backward pass reuses
    the input tiles' buffer for their gradient), m the output tile size of
    ``algo``: ``'winograd2'``, ``'winograd4'`` or None (default: the one
    :class:`FastConv` would use, F(2x2, 3x3) if none). ``share`` threads split
    the budget.
    """
    named = {"winograd2": _WINO2, "winograd4": _WINO4}
    if isinstance(algo, str) and algo in named:
        algo = named[algo]
    elif algo is not None and not isinstance(algo, _Winograd):
        raise ValueError(f"algo must be None, 'winograd2' or 'winograd4', got {algo!r}")
    algo = algo or _winograd_for(g) or _WINO2
    per_image = (g.C + g.F) * algo.multiplies(g) * itemsize
    limit = min(_column_budget // share, _WINOGRAD_CHUNK_TARGET)
    return int(max(1, min(g.N, limit // per_image)))


# Measured on C2 and three other 3x3 layers (2 threads): 1.25 MiB beats 0.6-1 MiB by 3-12%
# (longer GEMMs) and 2 MiB (the transforms start to miss the 2 MiB L2).
_WINOGRAD_CHUNK_TARGET = 5 * 2**18


def _wino_filter(algo, w):
    """U[a*r + s, f, c] = (G w[f, c] G^T)[r, s] (a = m+2): (a*a, F, C) contiguous, w's dtype.

    Two GEMMs with F*C columns on a transposed copy of w (measured 10x faster than einsum).
    """
    G = algo.G.astype(w.dtype)
    F, C = w.shape[:2]
    wt = np.ascontiguousarray(w.reshape(F * C, 3, 3).transpose(1, 2, 0))  # (k, l, fc)
    wg = np.matmul(G, wt)  # (k, s, fc) = (w G^T)[k, s]
    return (G @ wg.reshape(3, algo.alpha * F * C)).reshape(algo.nk, F, C)


def _wino_filter_adjoint(algo, dU, shape):
    """Adjoint of :func:`_wino_filter`: dw[f, c] = G^T dU[:, f, c] G, shape (F, C, 3, 3)."""
    G = algo.G.astype(dU.dtype)
    F, C = shape[:2]
    gd = (G.T @ dU.reshape(algo.alpha, algo.alpha * F * C)).reshape(3, algo.alpha, F * C)  # (k, s, fc)
    dwt = np.matmul(G.T, gd)  # (k, l, fc)
    return np.ascontiguousarray(dwt.reshape(9, F * C).T).reshape(F, C, 3, 3)


def _wino_input_numpy(algo, x, V, pad, tH, tW):
    n, C, H, W = x.shape
    m, a = algo.m, algo.alpha
    xp = np.zeros((n, C, m * tH + 2, m * tW + 2), dtype=x.dtype)
    xp[:, :, pad:pad + H, pad:pad + W] = x
    tiles = sliding_window_view(xp, (a, a), axis=(2, 3))[:, :, ::m, ::m]
    BT = algo.BT.astype(x.dtype)
    V.reshape(a, a, C, n, tH, tW)[...] = np.einsum("ir,ncabrs,js->ijcnab", BT, tiles, BT, optimize=True)


def _wino_input_adjoint_numpy(algo, dV, dx, pad, tH, tW):
    n, C, H, W = dx.shape
    m, a = algo.m, algo.alpha
    BT = algo.BT.astype(dx.dtype)
    dd = np.einsum("ir,ijcnab,js->rsncab", BT, dV.reshape(a, a, C, n, tH, tW), BT, optimize=True)
    dxp = np.zeros((n, C, m * tH + 2, m * tW + 2), dtype=dx.dtype)
    for r in range(a):  # a loop over the tile offsets, each step vectorised over all tiles
        for s in range(a):
            dxp[:, :, r:r + m * tH:m, s:s + m * tW:m] += dd[r, s]
    dx[...] = dxp[:, :, pad:pad + H, pad:pad + W]


def _wino_output_numpy(algo, M, b, out, tH, tW):
    n, F, Ho, Wo = out.shape
    m, a = algo.m, algo.alpha
    AT = algo.AT.astype(out.dtype)
    y = np.einsum("ai,ijfnhw,bj->nfhawb", AT, M.reshape(a, a, F, n, tH, tW), AT, optimize=True)
    out[...] = y.reshape(n, F, m * tH, m * tW)[:, :, :Ho, :Wo] + b.reshape(1, F, 1, 1)


def _wino_output_adjoint_numpy(algo, dout, dM, tH, tW):
    n, F, Ho, Wo = dout.shape
    m, a = algo.m, algo.alpha
    dyp = np.zeros((n, F, m * tH, m * tW), dtype=dout.dtype)
    dyp[:, :, :Ho, :Wo] = dout
    AT = algo.AT.astype(dout.dtype)
    dM.reshape(a, a, F, n, tH, tW)[...] = np.einsum("ai,nfhawb,bj->ijfnhw", AT,
                                                     dyp.reshape(n, F, tH, m, tW, m), AT, optimize=True)


def _slab_buffer(nk, rows, P, dtype):
    """Empty (nk, rows, P) array whose nk slabs are C-contiguous but padded apart.

    The slab stride is rounded so that it is 320 bytes past a multiple of 4 KiB:
    the kernels stream the slabs at once, and slabs a multiple of 4 KiB apart
    fall in the same cache sets (measured 3-5x slower transforms).
    """
    itemsize = np.dtype(dtype).itemsize
    nbytes = -(-rows * P * itemsize // 64) * 64
    nbytes += (320 - nbytes % 4096) % 4096
    buf = np.empty(nk * nbytes // itemsize, dtype=dtype)
    return np.lib.stride_tricks.as_strided(buf, shape=(nk, rows, P), strides=(nbytes, P * itemsize, itemsize))


def _slab_chunk(slabs, m, T):
    """The leading (nk, rows, m*T) part of a :func:`_slab_buffer` (same slab stride)."""
    s = slabs.strides
    return np.lib.stride_tricks.as_strided(slabs, shape=(slabs.shape[0], slabs.shape[1], m * T),
                                           strides=(s[0], m * T * s[2], s[2]))


def _wino_input(algo, x, V, pad, tH, tW, transposed=False):
    # transposed: V is (nk, P, C), the input tiles' layout for the dw GEMM
    if HAVE_CYTHON:
        _cwino.input_transform(x, V, pad, tH, tW, _CONV_KERNEL_THREADS, algo.m, transposed)
    elif transposed:
        tiles = np.empty((V.shape[0], V.shape[2], V.shape[1]), dtype=V.dtype)
        _wino_input_numpy(algo, x, tiles, pad, tH, tW)
        V[...] = tiles.transpose(0, 2, 1)
    else:
        _wino_input_numpy(algo, x, V, pad, tH, tW)


def _wino_input_adjoint(algo, dV, dx, pad, tH, tW):
    if HAVE_CYTHON:
        _cwino.input_adjoint(dV, dx, pad, tH, tW, _CONV_KERNEL_THREADS, algo.m)
    else:
        _wino_input_adjoint_numpy(algo, dV, dx, pad, tH, tW)


def _wino_output(algo, M, b, out, tH, tW):
    if HAVE_CYTHON:
        _cwino.output_transform(M, b, out, tH, tW, _CONV_KERNEL_THREADS, algo.m)
    else:
        _wino_output_numpy(algo, M, b, out, tH, tW)


def _wino_output_adjoint(algo, dout, dM, tH, tW):
    if HAVE_CYTHON:
        _cwino.output_adjoint(dout, dM, tH, tW, _CONV_KERNEL_THREADS, algo.m)
    else:
        _wino_output_adjoint_numpy(algo, dout, dM, tH, tW)


def _wino_chunks(algo, g, itemsize, dtype, lo, hi, share):
    """[(n0, m, V, M, VT), ...]: the chunks of images lo:hi with views of two slab buffers:
    V (nk, C, m*T) and M (nk, F, m*T), and VT (nk, m*T, C), a second view of V's memory.
    The views are made once per chunk size, not per chunk."""
    tH, tW = algo.tiles(g)
    T = tH * tW
    nb = min(winograd_chunk_size(g, itemsize, share, algo), hi - lo)
    vbuf = _slab_buffer(algo.nk, g.C, nb * T, dtype)
    vtbuf = np.lib.stride_tricks.as_strided(vbuf, shape=(algo.nk, nb * T, g.C),
                                            strides=(vbuf.strides[0], g.C * itemsize, itemsize))
    mbuf = _slab_buffer(algo.nk, g.F, nb * T, dtype)
    views = {}
    chunks = []
    for n0 in range(lo, hi, nb):
        m = min(nb, hi - n0)
        if m not in views:
            views[m] = (_slab_chunk(vbuf, m, T), _slab_chunk(mbuf, m, T), vtbuf[:, :m * T])
        chunks.append((n0, m) + views[m])
    return chunks


def _winograd_forward(algo, x, U, b, out, g, lo, hi, share):
    """out[lo:hi] by Winograd; U = _wino_filter(algo, w), b contiguous."""
    tH, tW = algo.tiles(g)
    for n0, m, V, M, _ in _wino_chunks(algo, g, x.itemsize, x.dtype, lo, hi, share):
        _wino_input(algo, x[n0:n0 + m], V, g.pad, tH, tW)
        np.matmul(U, V, out=M)
        _wino_output(algo, M, b, out[n0:n0 + m], tH, tW)


def _winograd_backward(algo, x, Ut, dout, dx, g, lo, hi, share):
    """dx[lo:hi] (overwritten) and images lo:hi's share of dU, which it returns.

    Per chunk: dM = A dY A^T and the input tiles V; dU += dM V^T (dw); dV = U^T dM,
    whose adjoint input transform is dx. (Keeping the tiles of several chunks for
    longer dw GEMMs measured slower: the transforms then miss the cache.)
    """
    tH, tW = algo.tiles(g)
    dU = np.zeros((algo.nk, g.F, g.C), dtype=x.dtype)
    part = np.empty_like(dU)
    for n0, m, V, dM, VT in _wino_chunks(algo, g, x.itemsize, x.dtype, lo, hi, share):
        _wino_output_adjoint(algo, dout[n0:n0 + m], dM, tH, tW)
        # The tiles laid out (P, C) make dM @ VT an NN GEMM: measured 2x faster than dM @ V^T.
        _wino_input(algo, x[n0:n0 + m], VT, g.pad, tH, tW, transposed=True)
        dU += np.matmul(dM, VT, out=part)
        np.matmul(Ut, dM, out=V)  # the tiles are used up: their memory takes their gradient
        _wino_input_adjoint(algo, V, dx[n0:n0 + m], g.pad, tH, tW)
    return dU


# ---------------------------------------------------------------- batch split across threads

# Measured on 2 cores: OpenBLAS's second thread buys little on the chunk-sized
# GEMMs, and its spinning workers slow the single-threaded kernels between them
# (C1 float32 forward+backward: 7.4 ms on 2 BLAS threads, 8.0 ms on 1). Splitting
# the batch between threads that each run the whole pipeline with 1-thread BLAS
# uses both cores: 4.3 ms. BLAS is limited through threadpoolctl for the duration
# (a process-wide setting); without threadpoolctl the batch is not split.
_SPLIT_BATCH = True
# Below this many multiply-adds (forward) a split costs more than it saves.
_SPLIT_MIN_WORK = 1 << 24
_executor = None
_blas_ctl = None


def _blas_controller():
    global _blas_ctl
    if _blas_ctl is None:
        try:
            from threadpoolctl import ThreadpoolController
            _blas_ctl = ThreadpoolController().select(user_api="blas")
        except Exception:  # not installed, or it cannot inspect this process
            _blas_ctl = False
    return _blas_ctl


def _batch_parts(g):
    """[(lo, hi), ...]: contiguous slices of the batch, one per thread (one slice: no split)."""
    nthreads = min(_MAX_THREADS, g.N)
    work = g.N * g.F * g.H_out * g.W_out * g.C * g.HH * g.WW
    if not _SPLIT_BATCH or nthreads < 2 or work < _SPLIT_MIN_WORK or not _blas_controller():
        return [(0, g.N)]
    bounds = [g.N * i // nthreads for i in range(nthreads + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(nthreads)]


def _forget_executor():
    # A forked child inherits the pool object but not its threads: start afresh.
    global _executor
    _executor = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_executor)


def _run_parts(fn, parts):
    """[fn(lo, hi) for (lo, hi) in parts] in some order; parts after the first run on worker
    threads, with BLAS on 1 thread. Parts no thread could be started for (a sandbox,
    interpreter shutdown) run on the calling thread.
    """
    global _executor
    if len(parts) == 1:
        return [fn(*parts[0])]
    if _executor is None or _executor._max_workers < len(parts) - 1:
        from concurrent.futures import ThreadPoolExecutor
        _executor = ThreadPoolExecutor(max_workers=len(parts) - 1, thread_name_prefix="convnet-fast")
    with _blas_controller().limit(limits=1):
        futures = []
        try:
            try:
                for lo, hi in parts[1:]:
                    futures.append(_executor.submit(fn, lo, hi))
            except RuntimeError as exc:
                if "thread" not in str(exc) and "shutdown" not in str(exc):
                    raise
            mine = [fn(lo, hi) for lo, hi in [parts[0]] + parts[1 + len(futures):]]
        finally:
            theirs = [f.result() for f in futures]  # wait for every worker before BLAS threads come back
    return mine + theirs


def _im2col_forward(x, wmat, b, out, g, lo, hi, share):
    """out[lo:hi] (shape (N, F, P)) by im2col + GEMM; b contiguous."""
    K, P = g.C * g.HH * g.WW, g.H_out * g.W_out
    nb = min(conv_chunk_size(g, x.itemsize, buffers=share), hi - lo)
    buf = np.empty(K * nb * P, dtype=x.dtype)
    for n0 in range(lo, hi, nb):  # loop over chunks of the batch, not elements
        m = min(nb, hi - n0)
        cols = buf[:K * m * P].reshape(K, m * P)
        _im2col_into(x[n0:n0 + m], cols.reshape(K, m, P), g)
        res = np.matmul(wmat, cols)
        if HAVE_CYTHON:
            _cim2col.bias_transpose(res.reshape(g.F, m, P), b, out[n0:n0 + m])
        else:
            np.add(res.reshape(g.F, m, P).transpose(1, 0, 2), b.reshape(1, g.F, 1), out=out[n0:n0 + m])


def _im2col_backward(x, wmat, d3, dx, g, lo, hi, share):
    """dx[lo:hi] (overwritten) and images lo:hi's share of dw (F, K), which it returns."""
    K, P = g.C * g.HH * g.WW, g.H_out * g.W_out
    dw = np.zeros((g.F, K), dtype=x.dtype)
    dwT = dw.T  # the long GEMM below runs 20-25% faster producing dw^T (measured on C3, C4)
    nb = min(conv_chunk_size(g, x.itemsize, buffers=2 * share), hi - lo)
    buf = np.empty(K * nb * P, dtype=x.dtype)
    dbuf = np.empty(K * nb * P, dtype=x.dtype)
    for n0 in range(lo, hi, nb):
        m = min(nb, hi - n0)
        cols = buf[:K * m * P].reshape(K, m * P)
        _im2col_into(x[n0:n0 + m], cols.reshape(K, m, P), g)
        dcols = dbuf[:K * m * P].reshape(K, m * P)
        if K <= _PER_IMAGE_GEMM_MAX_K:
            # Per-image GEMMs on dout as it lies: no transposed copy of it.
            dw += np.matmul(d3[n0:n0 + m], cols.reshape(K, m, P).transpose(1, 2, 0)).sum(axis=0)
            np.matmul(wmat.T, d3[n0:n0 + m], out=dcols.reshape(K, m, P).transpose(1, 0, 2))
        else:
            dmat = np.ascontiguousarray(d3[n0:n0 + m].transpose(1, 0, 2)).reshape(g.F, m * P)
            dwT += np.matmul(cols, dmat.T)
            np.matmul(wmat.T, dmat, out=dcols)
        _col2im_into(dcols.reshape(K, m, P), dx[n0:n0 + m], g)
    return dw


# Backward of thin layers (C*HH*WW <= this): per-image GEMMs straight from dout
# beat one GEMM on a transposed copy of it (measured on C1, K=27: 3.3 -> 2.4 ms
# in float32, even in float64; on C4, K=147, 8% slower).
_PER_IMAGE_GEMM_MAX_K = 32


# ---------------------------------------------------------------- caches


class _FastCache:
    """Base of the fast caches: small objects, recognised by their ``layer`` name."""

    __slots__ = ("layer",)

    def __repr__(self):
        return f"<{self.layer} cache>"


class ConvCache(_FastCache):
    """What :meth:`FastConv.forward` keeps: the inputs; backward recomputes the columns."""

    __slots__ = ("x", "w", "b", "conv_param")

    def __init__(self, x, w, b, conv_param):
        self.layer = "FastConv"
        self.x, self.w, self.b, self.conv_param = x, w, b, conv_param


class MaxPoolCache(_FastCache):
    """What :meth:`FastMaxPool.forward` keeps: the input and the flat argmax per window."""

    __slots__ = ("x", "pool_param", "argmax")

    def __init__(self, x, pool_param, argmax):
        self.layer = "FastMaxPool"
        self.x, self.pool_param, self.argmax = x, pool_param, argmax


class AvgPoolCache(_FastCache):
    """What :meth:`FastAvgPool.forward` keeps: the input and the pooling parameters."""

    __slots__ = ("x", "pool_param")

    def __init__(self, x, pool_param):
        self.layer = "FastAvgPool"
        self.x, self.pool_param = x, pool_param


def _check_fast_cache(cache, cls, layer):
    if type(cache) is cls:
        return cache
    owner = getattr(cache, "layer", None)
    if isinstance(cache, tuple):
        raise TypeError(f"{layer}.backward got a tuple cache (from a naive layer's forward?); "
                        f"it needs the cache returned by {layer}.forward")
    if isinstance(owner, str):
        raise TypeError(f"{layer}.backward got a cache made by {owner}.forward; pass it to {owner}.backward")
    raise TypeError(f"{layer}.backward expects the cache returned by {layer}.forward, "
                    f"got {type(cache).__name__}")


# ---------------------------------------------------------------- convolution


class FastConv:
    """2-D convolution (cross-correlation, as PyTorch's ``conv2d``) by im2col + GEMM."""

    @staticmethod
    def forward(x, w, b, conv_param):
        """Convolution forward pass; same contract as :meth:`convnet.layers.Conv.forward`.

        Parameters
        ----------
        x : ndarray of shape (N, C, H, W)
        w : ndarray of shape (F, C, HH, WW)
        b : ndarray of shape (F,)
        conv_param : dict
            ``'stride'`` : int >= 1, ``'pad'`` : int >= 0 (zero padding on every side).
            x, w and b share one dtype (float32 or float64).

        Returns
        -------
        out : ndarray of shape (N, F, H_out, W_out), x's dtype
            ``H_out = 1 + (H + 2*pad - HH) // stride``, likewise W_out.
        cache : ConvCache
            Accepted only by :meth:`FastConv.backward`.
        """
        g = _checks.conv_args(x, w, b, conv_param)
        cache = ConvCache(x, w, b, {"stride": g.stride, "pad": g.pad})
        x = np.ascontiguousarray(x)
        w = np.ascontiguousarray(w)
        bvec = np.ascontiguousarray(b)
        parts = _batch_parts(g)
        share = len(parts)
        algo = _winograd_for(g)
        if algo is not None:
            out = np.empty((g.N, g.F, g.H_out, g.W_out), dtype=x.dtype)
            U = _wino_filter(algo, w)
            _run_parts(lambda lo, hi: _winograd_forward(algo, x, U, bvec, out, g, lo, hi, share), parts)
            return out, cache
        wmat = w.reshape(g.F, g.C * g.HH * g.WW)
        out = np.empty((g.N, g.F, g.H_out * g.W_out), dtype=x.dtype)
        _run_parts(lambda lo, hi: _im2col_forward(x, wmat, bvec, out, g, lo, hi, share), parts)
        return out.reshape(g.N, g.F, g.H_out, g.W_out), cache

    @staticmethod
    def backward(dout, cache):
        """Convolution backward pass.

        Parameters
        ----------
        dout : ndarray of shape (N, F, H_out, W_out), the forward pass's dtype
        cache : ConvCache
            What :meth:`FastConv.forward` returned.

        Returns
        -------
        dx : ndarray of shape (N, C, H, W)
        dw : ndarray of shape (F, C, HH, WW)
        db : ndarray of shape (F,)
        """
        cache = _check_fast_cache(cache, ConvCache, "FastConv")
        x, w, b = cache.x, cache.w, cache.b
        # Re-validate: the cache is a plain object a caller could have edited.
        g = _checks.conv_args(x, w, b, cache.conv_param)
        dout = _checks.check_dout(dout, (g.N, g.F, g.H_out, g.W_out), x.dtype, "FastConv")
        x = np.ascontiguousarray(x)
        dout = np.ascontiguousarray(dout)
        w = np.ascontiguousarray(w)
        dx = np.empty(x.shape, dtype=x.dtype)
        parts = _batch_parts(g)
        share = len(parts)
        algo = _winograd_for(g)
        if algo is not None:
            Ut = np.ascontiguousarray(_wino_filter(algo, w).transpose(0, 2, 1))
            backward = partial(_winograd_backward, algo, x, Ut, dout, dx, g, share=share)
        else:
            backward = partial(_im2col_backward, x, w.reshape(g.F, g.C * g.HH * g.WW),
                               dout.reshape(g.N, g.F, g.H_out * g.W_out), dx, g, share=share)

        def part(lo, hi):
            # Each thread sums its images' dout for db: one thread doing it for the whole
            # batch measured 0.4 ms of a 9 ms backward (C2).
            return backward(lo=lo, hi=hi), dout[lo:hi].sum(axis=(0, 2, 3))

        dws, dbs = zip(*_run_parts(part, parts))
        db = sum(dbs)
        if algo is not None:
            return dx, _wino_filter_adjoint(algo, sum(dws), w.shape), db
        return dx, sum(dws).reshape(w.shape), db


# ---------------------------------------------------------------- pooling


def _pool_windows(xp, g):
    """View of every pooling window: (N, C, H_out, W_out, ph, pw)."""
    win = sliding_window_view(xp, (g.pool_height, g.pool_width), axis=(2, 3))
    return win[:, :, ::g.stride, ::g.stride][:, :, :g.H_out, :g.W_out]


def _maxpool_forward_numpy(x, g):
    p, ph, pw = g.pad, g.pool_height, g.pool_width
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf) if p else x
    win = _pool_windows(xp, g).reshape(g.N, g.C, g.H_out, g.W_out, ph * pw)
    a = np.argmax(win, axis=-1)  # first maximum in row-major order (and the first NaN)
    out = np.take_along_axis(win, a[..., None], axis=-1)[..., 0]
    hs = (np.arange(g.H_out) * g.stride - p)[:, None]
    ws = (np.arange(g.W_out) * g.stride - p)[None, :]
    idx = (hs + a // pw) * g.W + (ws + a % pw)
    if p:
        # A window of nothing but -inf: PyTorch picks its first real element, not the padding.
        first = np.maximum(hs, 0) * g.W + np.maximum(ws, 0)
        idx = np.where(out == -np.inf, first, idx)
    return np.ascontiguousarray(out), idx.astype(np.int32)


def _maxpool_backward_numpy(dout, argmax, g):
    planes = np.arange(g.N * g.C, dtype=np.int64).reshape(g.N, g.C, 1, 1) * (g.H * g.W)
    flat = (planes + argmax).ravel()
    dx = np.bincount(flat, weights=dout.ravel(), minlength=g.N * g.C * g.H * g.W)
    return dx.astype(dout.dtype, copy=False).reshape(g.N, g.C, g.H, g.W)


def _avgpool_forward_numpy(x, g):
    p = g.pad
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
    s = _pool_windows(xp, g).sum(axis=(-2, -1))
    return (s * x.dtype.type(1.0 / (g.pool_height * g.pool_width))).astype(x.dtype, copy=False)


def _avgpool_backward_numpy(dout, g):
    p, s = g.pad, g.stride
    dxp = np.zeros((g.N, g.C, g.H + 2 * p, g.W + 2 * p), dtype=dout.dtype)
    d = dout * dout.dtype.type(1.0 / (g.pool_height * g.pool_width))
    hspan, wspan = s * (g.H_out - 1) + 1, s * (g.W_out - 1) + 1
    for kh in range(g.pool_height):  # a loop over window offsets, vectorised over elements
        for kw in range(g.pool_width):
            dxp[:, :, kh:kh + hspan:s, kw:kw + wspan:s] += d
    return np.ascontiguousarray(dxp[:, :, p:p + g.H, p:p + g.W])


def _check_plane(g, layer):
    if g.H * g.W >= 2**31:
        raise ValueError(f"{layer}: an input plane of {g.H}x{g.W} elements is too large "
                         f"for int32 argmax indices")


class FastMaxPool:
    """Max pooling by direct loops; any window, stride and padding (padding is -inf)."""

    @staticmethod
    def forward(x, pool_param):
        """Max-pool forward pass; same contract as :meth:`convnet.layers.MaxPool.forward`.

        Parameters
        ----------
        x : ndarray of shape (N, C, H, W), float32 or float64
        pool_param : dict
            ``'pool_height'``, ``'pool_width'``, ``'stride'`` : int >= 1;
            ``'pad'`` : int, optional, default 0, at most half the window
            (implicit -inf padding, as PyTorch's ``max_pool2d``).

        Returns
        -------
        out : ndarray of shape (N, C, H_out, W_out), x's dtype
        cache : MaxPoolCache
            Holds the flat index ``h*W + w`` of each window's first maximum in
            row-major order; accepted only by :meth:`FastMaxPool.backward`.
        """
        g = _checks.pool_args(x, pool_param, "FastMaxPool")
        _check_plane(g, "FastMaxPool")
        params = {"pool_height": g.pool_height, "pool_width": g.pool_width, "stride": g.stride, "pad": g.pad}
        xc = np.ascontiguousarray(x)
        if HAVE_CYTHON:
            out = np.empty((g.N, g.C, g.H_out, g.W_out), dtype=x.dtype)
            argmax = np.empty((g.N, g.C, g.H_out, g.W_out), dtype=np.int32)
            _cpool.maxpool_forward(xc.reshape(g.N * g.C, g.H, g.W), out.reshape(g.N * g.C, g.H_out, g.W_out),
                                   argmax.reshape(g.N * g.C, g.H_out, g.W_out),
                                   g.pool_height, g.pool_width, g.stride, g.pad, _threads(x.size))
        else:
            out, argmax = _maxpool_forward_numpy(xc, g)
        return out, MaxPoolCache(x, params, argmax)

    @staticmethod
    def backward(dout, cache):
        """Max-pool backward pass: each window's gradient goes to its first maximum; overlaps add up.

        Parameters
        ----------
        dout : ndarray of shape (N, C, H_out, W_out), the forward pass's dtype
        cache : MaxPoolCache
            What :meth:`FastMaxPool.forward` returned.

        Returns
        -------
        dx : ndarray of shape (N, C, H, W)
        """
        cache = _check_fast_cache(cache, MaxPoolCache, "FastMaxPool")
        g = _checks.pool_args(cache.x, cache.pool_param, "FastMaxPool")
        _check_plane(g, "FastMaxPool")
        shape = (g.N, g.C, g.H_out, g.W_out)
        dout = _checks.check_dout(dout, shape, cache.x.dtype, "FastMaxPool")
        argmax = cache.argmax
        # The kernel writes dx at these indices: check them, the cache may have been edited.
        if not isinstance(argmax, np.ndarray) or argmax.dtype != np.int32 or argmax.shape != shape:
            raise ValueError(f"FastMaxPool: the cache's argmax must be an int32 array of shape {shape}; "
                             "pass the cache FastMaxPool.forward returned, unmodified")
        lo, hi = (int(argmax.min()), int(argmax.max()))
        if lo < 0 or hi >= g.H * g.W:
            raise ValueError(f"FastMaxPool: the cache's argmax holds indices in [{lo}, {hi}], outside "
                             f"[0, {g.H * g.W}) for {g.H}x{g.W} planes; the cache was modified")
        dout = np.ascontiguousarray(dout)
        argmax = np.ascontiguousarray(argmax)
        if HAVE_CYTHON:
            # The kernel zeroes each plane before scattering into it: measured 3.3 ms against
            # 12.5 ms for np.zeros' lazily zeroed pages (P1 float64 backward, 2 threads).
            dx = np.empty((g.N, g.C, g.H, g.W), dtype=dout.dtype)
            _cpool.maxpool_backward(dout.reshape(g.N * g.C, g.H_out * g.W_out),
                                    argmax.reshape(g.N * g.C, g.H_out * g.W_out),
                                    dx.reshape(g.N * g.C, g.H * g.W), _threads(dx.size), True)
            return dx
        return _maxpool_backward_numpy(dout, argmax, g)


class FastAvgPool:
    """Average pooling by direct loops; zero padding counts in the divisor (PyTorch's default)."""

    @staticmethod
    def forward(x, pool_param):
        """Average-pool forward pass; same contract as :meth:`convnet.layers.AvgPool.forward`.

        Parameters
        ----------
        x : ndarray of shape (N, C, H, W), float32 or float64
        pool_param : dict
            As :meth:`FastMaxPool.forward`; padding is zeros and every window
            divides by ``pool_height * pool_width`` (``count_include_pad=True``).

        Returns
        -------
        out : ndarray of shape (N, C, H_out, W_out), x's dtype
        cache : AvgPoolCache
            Accepted only by :meth:`FastAvgPool.backward`.
        """
        g = _checks.pool_args(x, pool_param, "FastAvgPool")
        params = {"pool_height": g.pool_height, "pool_width": g.pool_width, "stride": g.stride, "pad": g.pad}
        xc = np.ascontiguousarray(x)
        if HAVE_CYTHON:
            out = np.empty((g.N, g.C, g.H_out, g.W_out), dtype=x.dtype)
            _cpool.avgpool_forward(xc.reshape(g.N * g.C, g.H, g.W), out.reshape(g.N * g.C, g.H_out, g.W_out),
                                   g.pool_height, g.pool_width, g.stride, g.pad, _threads(x.size))
        else:
            out = _avgpool_forward_numpy(xc, g)
        return out, AvgPoolCache(x, params)

    @staticmethod
    def backward(dout, cache):
        """Average-pool backward pass: each window spreads ``dout / (ph * pw)``; overlaps add up.

        Parameters
        ----------
        dout : ndarray of shape (N, C, H_out, W_out), the forward pass's dtype
        cache : AvgPoolCache
            What :meth:`FastAvgPool.forward` returned.

        Returns
        -------
        dx : ndarray of shape (N, C, H, W)
        """
        cache = _check_fast_cache(cache, AvgPoolCache, "FastAvgPool")
        g = _checks.pool_args(cache.x, cache.pool_param, "FastAvgPool")
        dout = _checks.check_dout(dout, (g.N, g.C, g.H_out, g.W_out), cache.x.dtype, "FastAvgPool")
        dout = np.ascontiguousarray(dout)
        if HAVE_CYTHON:
            dx = np.empty((g.N, g.C, g.H, g.W), dtype=dout.dtype)
            _cpool.avgpool_backward(dout.reshape(g.N * g.C, g.H_out, g.W_out), dx.reshape(g.N * g.C, g.H, g.W),
                                    g.pool_height, g.pool_width, g.stride, g.pad, _threads(dx.size))
            return dx
        return _avgpool_backward_numpy(dout, g)
