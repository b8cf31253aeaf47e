"""Tests of convnet.stride: the worked numbers of the overlap analysis, and the formulas against the real layers' backward passes."""
from fractions import Fraction

import numpy as np
import pytest

from convnet import stride_table as stride
from convnet.__main__ import main as convnet_main
from convnet.layers import AvgPool, Conv, MaxPool
from convnet.stride import correction_factor, filter_rescale, overlap_count, repeated_cell
from convnet.stride_table import factor_table, format_table

KERNELS = range(1, 6)
STRIDES = range(1, 4)
TOL = {np.float32: 1e-6, np.float64: 1e-12}


# ---------------------------------------------------------------- helpers (independent of convnet.stride)


def brute_count(H, W, kh, kw, sh, sw, ph, pw):
    """Count windows per input position by walking every window, as the analysis's figure does."""
    n_h = 1 + (H + 2 * ph - kh) // sh
    n_w = 1 + (W + 2 * pw - kw) // sw
    count = np.zeros((H + 2 * ph, W + 2 * pw), dtype=np.int64)
    for a in range(n_h):
        for b in range(n_w):
            count[a * sh:a * sh + kh, b * sw:b * sw + kw] += 1
    return count[ph:ph + H, pw:pw + W]


def conv_dx(size, k, s, pad=0, channels=1, w=None, dtype=np.float64):
    """Conv.backward's dx with an all-ones upstream gradient; default filter flat with unit l2 norm."""
    x = np.zeros((1, channels, size, size), dtype=dtype)
    if w is None:
        w = np.full((1, channels, k, k), 1.0 / np.sqrt(channels * k * k))
    w = np.asarray(w, dtype=dtype).reshape(1, channels, k, k)
    b = np.zeros(1, dtype=dtype)
    out, cache = Conv.forward(x, w, b, {"stride": s, "pad": pad})
    dx, _, _ = Conv.backward(np.ones_like(out), cache)
    return dx[0]


def avgpool_dx(size, k, s, pad=0, dtype=np.float64):
    x = np.zeros((1, 1, size, size), dtype=dtype)
    out, cache = AvgPool.forward(x, {"pool_height": k, "pool_width": k, "stride": s, "pad": pad})
    return AvgPool.backward(np.ones_like(out), cache)[0, 0]


def maxpool_dx(x, k, s):
    out, cache = MaxPool.forward(x[None, None], {"pool_height": k, "pool_width": k, "stride": s})
    return MaxPool.backward(np.ones_like(out), cache)[0, 0], out.size


def interior(k, s, pad):
    """A block of whole periods (3 s x 3 s) in the interior of an input of size 2k + 3s.

    Every position i with k <= i < H - k has all the windows that could reach it: the first
    possible window starts at i - k + 1 >= 1 > -pad and the last at i < H - k < n_out * s - pad.
    Returns the size, the block's slice and the phase (i + pad) % s of each row/column.
    """
    size = 2 * k + 3 * s
    rows = np.arange(k, k + 3 * s)
    return size, slice(k, k + 3 * s), (rows + pad) % s


def empirical_cell(block, phase, s):
    """cell[r, q] read off the block at the first row/column of each phase; NaN if a phase is missing."""
    cell = np.full((s, s), np.nan)
    for r in range(s):
        for q in range(s):
            cell[r, q] = block[np.argmax(phase == r), np.argmax(phase == q)]
    return cell


def rms(a):
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


# ---------------------------------------------------------------- the worked numbers of the overlap analysis


def test_seed_figure_5x5_kernel3_stride2():
    # The analysis numbers a 5x5 input 1..25: 7, 9, 17, 19 are convolved once, 13 four times.
    count = overlap_count((5, 5), 3, 2)
    flat = count.ravel()
    assert [flat[n - 1] for n in (7, 9, 17, 19)] == [1, 1, 1, 1]
    assert flat[13 - 1] == 4
    np.testing.assert_array_equal(count, [[1, 1, 2, 1, 1],
                                          [1, 1, 2, 1, 1],
                                          [2, 2, 4, 2, 2],
                                          [1, 1, 2, 1, 1],
                                          [1, 1, 2, 1, 1]])


def test_seed_cell_and_factor_5_over_6():
    cell = repeated_cell(3, 2)
    np.testing.assert_array_equal(cell, [[4, 2], [2, 1]])
    assert cell.shape == (2, 2) and cell.dtype.kind == "i"
    # The analysis's "Std" is sqrt((16 + 4 + 4 + 1) / 4) = 5/2, the RMS, not the sample std (~1.09).
    assert rms(cell) == pytest.approx(2.5, abs=1e-15)
    assert np.std(cell) == pytest.approx(np.sqrt(1.1875))
    # Unit-norm flat 3x3 filter: every tap 1/3, so 5/2 / 3 = 5/6.
    assert correction_factor(3, 2) == pytest.approx(5 / 6, abs=1e-15)
    assert correction_factor(3, 2, channels=1, layer="conv", measure="std") == pytest.approx(5 / 6, abs=1e-15)


def test_seed_filter_rescale_quarter_half_one():
    np.testing.assert_allclose(filter_rescale(3, 2), [[1 / 4, 1 / 2, 1 / 4],
                                                      [1 / 2, 1, 1 / 2],
                                                      [1 / 4, 1 / 2, 1 / 4]], rtol=0, atol=1e-15)
    assert filter_rescale(3, 2).dtype == np.float64


def test_hand_derived_factors():
    # k=5, s=2: c = [3, 2], cell [[9, 6], [6, 4]], RMS sqrt(169/4) = 13/2, tap 1/5 -> 13/10.
    np.testing.assert_array_equal(repeated_cell(5, 2), [[9, 6], [6, 4]])
    assert correction_factor(5, 2) == pytest.approx(13 / 10)
    # k=3, s=3: cell all ones -> RMS 1, tap 1/3.
    assert correction_factor(3, 3) == pytest.approx(1 / 3)
    # Stride 1: cell [[k^2]], factor k^2 / k = k for one channel, sqrt(k^2 / C) in general.
    assert correction_factor(4, 1) == pytest.approx(4.0)
    assert correction_factor(3, 1, channels=4) == pytest.approx(1.5)
    # Two channels: the unit-norm filter has taps 1/(3 sqrt 2).
    assert correction_factor(3, 2, channels=2) == pytest.approx(5 / (6 * np.sqrt(2)))
    # Average pooling: mean filter 1/9, so 5/2 / 9; channels do not matter.
    assert correction_factor(3, 2, layer="avgpool") == pytest.approx(5 / 18)
    assert correction_factor(3, 2, channels=7, layer="avgpool") == pytest.approx(5 / 18)
    assert correction_factor(4, 1, layer="avgpool") == pytest.approx(1.0)
    # MAD = mean count (k^2/s^2) times the tap.
    assert correction_factor(3, 2, measure="mad") == pytest.approx(9 / 4 / 3)
    assert correction_factor(3, 2, layer="avgpool", measure="mad") == pytest.approx(1 / 4)
    assert correction_factor(5, 3, layer="maxpool", measure="mad") == pytest.approx(1 / 9)


def test_kernel_smaller_than_stride_leaves_gaps():
    np.testing.assert_array_equal(repeated_cell(1, 2), [[1, 0], [0, 0]])
    np.testing.assert_array_equal(repeated_cell(2, 3), [[1, 1, 0], [1, 1, 0], [0, 0, 0]])
    assert correction_factor(1, 2) == pytest.approx(0.5)
    np.testing.assert_array_equal(filter_rescale(2, 3), np.ones((2, 2)))


def test_non_square_kernel_and_stride():
    np.testing.assert_array_equal(repeated_cell((3, 2), (2, 1)), [[4], [2]])
    np.testing.assert_array_equal(repeated_cell([3, 3], (2, 3)), [[2, 2, 2], [1, 1, 1]])
    np.testing.assert_allclose(filter_rescale((3, 2), (2, 1)), [[1 / 4, 1 / 4], [1 / 2, 1 / 2], [1 / 4, 1 / 4]])
    # Factor against the brute-force map's interior (a whole number of periods).
    for (kh, kw), (sh, sw), C in [((3, 2), (2, 1), 1), ((5, 3), (3, 2), 2), ((2, 4), (1, 3), 3)]:
        count = brute_count(40, 40, kh, kw, sh, sw, 0, 0)
        block = count[kh:kh + 6 * sh, kw:kw + 6 * sw]
        assert correction_factor((kh, kw), (sh, sw), channels=C) == pytest.approx(rms(block) / np.sqrt(C * kh * kw))
        assert correction_factor((kh, kw), (sh, sw), layer="avgpool") == pytest.approx(rms(block) / (kh * kw))


@pytest.mark.parametrize("H, W, kernel, stride_, pad", [
    (5, 5, 3, 2, 0), (7, 6, 3, 2, 1), (9, 8, (3, 2), (2, 1), (1, 0)), (10, 11, 4, 3, 2),
    (6, 6, 1, 2, 0), (8, 13, (2, 5), (3, 2), (0, 2)), (4, 4, 4, 1, 0), (12, 12, 5, 3, 1),
])
def test_overlap_count_matches_brute_force(H, W, kernel, stride_, pad):
    pair = lambda v: v if isinstance(v, tuple) else (v, v)
    expected = brute_count(H, W, *pair(kernel), *pair(stride_), *pair(pad))
    got = overlap_count((H, W), kernel, stride_, pad)
    assert got.shape == (H, W) and got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def test_overlap_count_floor_drops_the_tail():
    # 6 wide, 3/2: windows at 0 and 2 only (1 + 3 // 2 = 2); column 5 is in no window, as in PyTorch.
    np.testing.assert_array_equal(overlap_count((1, 6), (1, 3), (1, 2)), [[1, 1, 2, 1, 1, 0]])


@pytest.mark.parametrize("H, W, kernel, stride_, pad", [
    (9, 9, 3, 2, 0), (10, 7, (3, 2), (2, 3), (1, 0)), (11, 11, 5, 3, 2), (6, 9, (1, 4), (2, 1), 0),
])
def test_overlap_count_matches_pytorch(H, W, kernel, stride_, pad):
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle; pip install torch==2.13.0")
    pair = lambda v: v if isinstance(v, tuple) else (v, v)
    x = torch.zeros((1, 1, H, W), dtype=torch.float64, requires_grad=True)
    w = torch.ones((1, 1, *pair(kernel)), dtype=torch.float64)
    torch.nn.functional.conv2d(x, w, stride=pair(stride_), padding=pair(pad)).sum().backward()
    np.testing.assert_array_equal(overlap_count((H, W), kernel, stride_, pad), x.grad[0, 0].numpy())


# ---------------------------------------------------------------- empirically, from the real layers


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("pad", [0, 1])
@pytest.mark.parametrize("s", STRIDES)
@pytest.mark.parametrize("k", KERNELS)
def test_conv_backward_gives_count_cell_and_factors(k, s, pad, dtype):
    size, blk, phase = interior(k, s, pad)
    dx = conv_dx(size, k, s, pad, dtype=dtype)[0]
    assert dx.dtype == dtype
    tap = 1.0 / k
    # The whole map, borders included, is count x tap.
    np.testing.assert_allclose(dx, overlap_count(size, k, s, pad) * tap, rtol=TOL[dtype], atol=TOL[dtype])
    block = dx[blk, blk]
    np.testing.assert_array_equal(np.rint(empirical_cell(block, phase, s) / tap), repeated_cell(k, s))
    # The block is periodic with the cell at the documented phase (i + pad) % s.
    np.testing.assert_allclose(block / tap, repeated_cell(k, s)[np.ix_(phase, phase)], rtol=TOL[dtype])
    assert rms(block) == pytest.approx(correction_factor(k, s), rel=10 * TOL[dtype])
    assert np.mean(np.abs(block)) == pytest.approx(correction_factor(k, s, measure="mad"), rel=10 * TOL[dtype])


@pytest.mark.parametrize("k, s, C", [(3, 2, 3), (2, 1, 2), (5, 3, 2), (4, 2, 4)])
def test_conv_backward_factor_with_channels(k, s, C):
    size, blk, _ = interior(k, s, 0)
    dx = conv_dx(size, k, s, channels=C)
    assert dx.shape == (C, size, size)
    for c in range(C):
        block = dx[c, blk, blk]
        assert rms(block) == pytest.approx(correction_factor(k, s, channels=C))
        assert np.mean(np.abs(block)) == pytest.approx(correction_factor(k, s, channels=C, measure="mad"))


@pytest.mark.parametrize("s", STRIDES)
@pytest.mark.parametrize("k", KERNELS)
def test_avgpool_backward_gives_cell_and_factors(k, s):
    pad = k // 2  # AvgPool allows at most half the window; the phase must follow it
    size, blk, phase = interior(k, s, pad)
    dx = avgpool_dx(size, k, s, pad)
    np.testing.assert_allclose(dx, overlap_count(size, k, s, pad) / (k * k), rtol=1e-12)
    block = dx[blk, blk]
    np.testing.assert_array_equal(np.rint(empirical_cell(block, phase, s) * k * k), repeated_cell(k, s))
    assert rms(block) == pytest.approx(correction_factor(k, s, layer="avgpool"), rel=1e-12)
    assert np.mean(np.abs(block)) == pytest.approx(correction_factor(k, s, layer="avgpool", measure="mad"),
                                                   rel=1e-12)


@pytest.mark.parametrize("s", STRIDES)
@pytest.mark.parametrize("k", KERNELS)
def test_filter_rescale_equalises_the_interior(k, s):
    size, blk, phase = interior(k, s, 0)
    flat = conv_dx(size, k, s, w=np.ones((k, k)))[0][blk, blk]
    rescaled = conv_dx(size, k, s, w=filter_rescale(k, s))[0][blk, blk]
    covered = (phase[:, None] < k) & (phase[None, :] < k)
    # Every covered interior position now gets exactly one filter value; uncovered ones (k < s) stay 0.
    np.testing.assert_allclose(rescaled[covered], 1.0, rtol=1e-12)
    np.testing.assert_array_equal(rescaled[~covered], 0.0)
    assert covered.all() == (k >= s)
    # Before rescaling the interior was uneven exactly when the cell is not constant.
    cell = repeated_cell(k, s)
    assert (np.ptp(flat) > 0) == (cell.min() != cell.max())


def test_filter_rescale_stride_one_is_uniform():
    np.testing.assert_allclose(filter_rescale(4, 1), np.full((4, 4), 1 / 16))
    np.testing.assert_allclose(filter_rescale((2, 3), 1), np.full((2, 3), 1 / 6))


def test_maxpool_mad_is_independent_of_where_maxima_fall():
    # The analysis's two cases: two 3x3/2 windows over a 3x5 strip, maxima apart or shared (column 2).
    apart = np.zeros((3, 5))
    apart[1, 0] = apart[1, 4] = 1.0
    shared = np.zeros((3, 5))
    shared[1, 2] = 1.0
    dx_apart, n = maxpool_dx(apart, 3, 2)
    dx_shared, _ = maxpool_dx(shared, 3, 2)
    assert n == 2 and dx_apart.max() == 1 and dx_shared.max() == 2
    # RMS differs by sqrt(2); MAD is the same: the std cannot measure max pooling, the MAD can.
    assert rms(dx_shared) == pytest.approx(np.sqrt(2) * rms(dx_apart))
    assert np.mean(np.abs(dx_shared)) == pytest.approx(np.mean(np.abs(dx_apart)))


@pytest.mark.parametrize("s", STRIDES)
@pytest.mark.parametrize("k", KERNELS)
def test_maxpool_gradient_mass_matches_avgpool(k, s):
    # Each window sends 1 to one position, so sum |dx| = number of windows for any data;
    # average pooling spreads the same mass evenly, so the two share the MAD factor 1/s^2.
    size = 2 * k + 3 * s
    rng = np.random.default_rng(1000 * k + s)
    yy, xx = np.mgrid[:size, :size]
    bump = -((yy - size / 2) ** 2 + (xx - size / 3) ** 2)  # one peak: neighbouring windows share maxima
    for x in (rng.standard_normal((size, size)), bump):
        dx, n_windows = maxpool_dx(x, k, s)
        assert np.abs(dx).sum() == pytest.approx(n_windows)
        assert np.abs(dx).sum() == pytest.approx(avgpool_dx(size, k, s).sum())
    assert correction_factor(k, s, layer="maxpool", measure="mad") == pytest.approx(
        correction_factor(k, s, layer="avgpool", measure="mad"))
    assert correction_factor(k, s, layer="maxpool", measure="mad") == pytest.approx(1 / s ** 2)


def test_maxpool_interior_mad_on_random_data():
    # A large random input: the interior's mean |dx| approaches 1/s^2 up to the block's boundary windows.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((62, 62))
    dx, _ = maxpool_dx(x, 3, 2)
    block = dx[1:61, 1:61]
    assert np.mean(np.abs(block)) == pytest.approx(correction_factor(3, 2, layer="maxpool", measure="mad"), rel=0.05)


# ---------------------------------------------------------------- the table


def test_factor_table_shape_and_entries():
    table = factor_table()
    assert table.shape == (7, 3) and table.dtype == np.float64
    assert table[2, 1] == pytest.approx(5 / 6)  # kernel 3, stride 2
    np.testing.assert_allclose(table[:, 0], np.arange(1, 8))  # stride 1: factor k
    assert table[4, 1] == pytest.approx(13 / 10)
    avg = factor_table(kernels=[3], strides=[2, 3], layer="avgpool")
    np.testing.assert_allclose(avg, [[5 / 18, 1 / 9]])
    mad = factor_table(range(1, 4), range(1, 4), layer="maxpool", measure="mad")
    np.testing.assert_allclose(mad, np.tile([1, 1 / 4, 1 / 9], (3, 1)))


def test_exact_fraction_agrees_with_float():
    for k in range(1, 8):
        for s in range(1, 4):
            for C, layer, measure in [(1, "conv", "std"), (3, "conv", "std"), (2, "conv", "mad"),
                                      (1, "avgpool", "std"), (1, "maxpool", "mad")]:
                f2 = stride._factor_squared(k, s, C, layer, measure)
                assert isinstance(f2, Fraction)
                assert float(f2) == pytest.approx(correction_factor(k, s, C, layer, measure) ** 2, rel=1e-12)


def test_format_table_markdown():
    text = format_table(kernels=[3, 5], strides=[1, 2], markdown=True, cells=True)
    lines = text.splitlines()
    assert lines[0] == "| kernel | stride 1 | stride 2 |"
    assert lines[2] == "| 3 | 3.0000 (3) c=[3] | 0.8333 (5/6) c=[2 1] |"
    assert lines[3] == "| 5 | 5.0000 (5) c=[5] | 1.3000 (13/10) c=[3 2] |"


def _row(out, kernel):
    for line in out.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if cols[0] == str(kernel):
            return cols[1:]
    raise AssertionError(f"no row for kernel {kernel} in:\n{out}")


def test_cli_prints_the_table(capsys):
    assert stride.main([]) == 0
    out = capsys.readouterr().out
    assert "layer=conv, measure=std" in out
    assert [c.split()[0] for c in _row(out, 3)] == ["3.0000", "0.8333", "0.3333"]
    assert _row(out, 3)[1] == "0.8333 (5/6)"
    assert _row(out, 7)[1] == "1.7857 (25/14)"
    assert _row(out, 1) and _row(out, 7) and "stride 3" in out


def test_cli_through_python_m_convnet(capsys):
    assert convnet_main(["stride", "--layer", "avgpool", "--cells"]) == 0
    out = capsys.readouterr().out
    assert _row(out, 3)[1] == "0.2778 (5/18) c=[2 1]"
    assert convnet_main(["stride", "--layer", "maxpool", "--max-kernel", "2", "--max-stride", "2"]) == 0
    out = capsys.readouterr().out
    assert "measure=mad" in out and _row(out, 2) == ["1.0000 (1)", "0.2500 (1/4)"]
    assert convnet_main(["stride", "--channels", "2", "--measure", "mad", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| 3 | 2.1213 (sqrt(9/2)) | 0.5303 (sqrt(9/32)) | 0.2357 (sqrt(1/18)) |" in out


@pytest.mark.parametrize("argv, message", [
    (["--layer", "dense"], "layer must be one of"),
    (["--layer", "maxpool", "--measure", "std"], "needs measure='mad'"),
    (["--measure", "var"], "measure must be one of"),
    (["--channels", "0"], "channels must be >= 1"),
    (["--max-kernel", "0"], "--max-kernel must be >= 1"),
])
def test_cli_bad_options_exit_2(capsys, argv, message):
    assert stride.main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_cli_help_and_usage_errors(capsys):
    assert stride.main(["--help"]) == 0
    assert "--layer" in capsys.readouterr().out
    assert stride.main(["--channels", "two"]) == 2
    assert "invalid int value" in capsys.readouterr().err


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("call, exc, match", [
    (lambda: repeated_cell(0, 2), ValueError, r"kernel must be >= 1, got 0"),
    (lambda: repeated_cell(-3, 2), ValueError, r"kernel must be >= 1, got -3"),
    (lambda: repeated_cell(2.5, 2), TypeError, r"kernel must be an integer, got 2.5"),
    (lambda: repeated_cell(True, 2), TypeError, r"kernel must be an integer, got True"),
    (lambda: repeated_cell("3", 2), TypeError, r"kernel must be an int or an \(h, w\) pair of ints, got '3'"),
    (lambda: repeated_cell((3, 3, 3), 2), ValueError, r"kernel must be an int or an \(h, w\) pair, got \(3, 3, 3\)"),
    (lambda: repeated_cell((3, 0), 2), ValueError, r"kernel\[1\] must be >= 1, got 0"),
    (lambda: repeated_cell(3, 0), ValueError, r"stride must be >= 1, got 0"),
    (lambda: repeated_cell(3, None), TypeError, r"stride must be an integer, got None"),
    (lambda: filter_rescale(3, (2, -1)), ValueError, r"stride\[1\] must be >= 1, got -1"),
    (lambda: overlap_count(5, 3, 2, pad=-1), ValueError, r"pad must be >= 0, got -1"),
    (lambda: overlap_count(5, 3, 2, pad=0.5), TypeError, r"pad must be an integer, got 0.5"),
    (lambda: overlap_count(0, 3, 2), ValueError, r"input_hw must be >= 1, got 0"),
    (lambda: overlap_count((4, 4), 5, 1), ValueError, r"kernel 5x5 is larger than the padded input 4x4"),
    (lambda: overlap_count((4, 4), (3, 7), 1, pad=1), ValueError,
     r"kernel 3x7 is larger than the padded input 6x6 \(input 4x4, pad 1x1\)"),
    (lambda: correction_factor(3, 2, channels=0), ValueError, r"channels must be >= 1, got 0"),
    (lambda: correction_factor(3, 2, channels=1.0), TypeError, r"channels must be an integer, got 1.0"),
    (lambda: correction_factor(3, 2, layer="dense"), ValueError, r"layer must be one of .*got 'dense'"),
    (lambda: correction_factor(3, 2, layer=None), TypeError, r"layer must be one of .*got None"),
    (lambda: correction_factor(3, 2, measure="var"), ValueError, r"measure must be one of .*got 'var'"),
    (lambda: correction_factor(3, 2, layer="maxpool"), ValueError, r"layer='maxpool' needs measure='mad'"),
    (lambda: factor_table(kernels=[]), ValueError, r"kernels must not be empty"),
    (lambda: factor_table(strides=3), TypeError, r"strides must be an iterable"),
    (lambda: factor_table(kernels=[3, 0]), ValueError, r"kernel must be >= 1, got 0"),
])
def test_bad_arguments_raise_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
