"""``python -m convnet stride``: the table of gradient-scale factors of :mod:`convnet.stride`.

:func:`factor_table` computes the factors for a range of kernels and strides,
:func:`format_table` prints them (with their exact values and the 1-D cells),
:func:`main` is the command line.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from convnet._checks import check_int
from convnet.stride import _cell_1d, _exact_text, _factor_squared, _layer_measure, _pair, correction_factor

__all__ = ["factor_table", "format_table", "main"]


def factor_table(kernels=range(1, 8), strides=range(1, 4), channels=1, layer="conv", measure="std") -> np.ndarray:
    """:func:`correction_factor` for every kernel (rows) and stride (columns).

    Parameters
    ----------
    kernels : iterable of int or (int, int), optional
        Window sizes, default 1 to 7. Must not be empty.
    strides : iterable of int or (int, int), optional
        Strides, default 1 to 3. Must not be empty.
    channels, layer, measure
        As :func:`correction_factor`.

    Returns
    -------
    table : ndarray of float64, shape (len(kernels), len(strides))
        ``table[i, j] = correction_factor(kernels[i], strides[j], channels, layer, measure)``.
    """
    kernels, strides = _nonempty("kernels", kernels), _nonempty("strides", strides)
    return np.array([[correction_factor(k, s, channels, layer, measure) for s in strides] for k in kernels],
                    dtype=np.float64)


def _nonempty(name: str, values) -> list:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be an iterable of ints or (h, w) pairs, got {values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values


def _label(v) -> str:
    h, w = _pair("value", v, 0)
    return str(h) if h == w else f"{h}x{w}"


def format_table(kernels=range(1, 8), strides=range(1, 4), channels=1, layer="conv", measure="std",
                 cells=False, markdown=False) -> str:
    """The table of :func:`factor_table` as text: ``0.8333 (5/6)`` per entry.

    Parameters
    ----------
    kernels, strides, channels, layer, measure
        As :func:`factor_table`.
    cells : bool, optional
        Also show each case's 1-D interior counts ``c`` (the cell is ``outer(c_h, c_w)``).
    markdown : bool, optional
        A Markdown pipe table instead of aligned plain text.

    Returns
    -------
    text : str
        Header, then one row per kernel and one column per stride.
    """
    kernels, strides = _nonempty("kernels", kernels), _nonempty("strides", strides)
    table = factor_table(kernels, strides, channels, layer, measure)
    layer, measure = _layer_measure(layer, measure)
    channels = check_int("channels", channels, 1)
    header = ["kernel"] + [f"stride {_label(s)}" for s in strides]
    rows = []
    for i, k in enumerate(kernels):
        row = [_label(k)]
        for j, s in enumerate(strides):
            text = f"{table[i, j]:.4f} ({_exact_text(_factor_squared(k, s, channels, layer, measure))})"
            if cells:
                kh, kw = _pair("kernel", k, 1)
                sh, sw = _pair("stride", s, 1)
                ch = " ".join(map(str, _cell_1d(kh, sh)))
                cw = " ".join(map(str, _cell_1d(kw, sw)))
                text += f" c=[{ch}]" if (kh, sh) == (kw, sw) else f" c=[{ch}]x[{cw}]"
            row.append(text)
        rows.append(row)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(r[c]) for r in [header] + rows) for c in range(len(header))]

    def fmt(row):
        return " | ".join(x.rjust(wd) if c == 0 else x.ljust(wd) for c, (x, wd) in enumerate(zip(row, widths)))

    lines = [fmt(header), "-+-".join("-" * wd for wd in widths)] + [fmt(r) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


_DESCRIPTION = {
    "std": "RMS over one repeated cell",
    "mad": "mean absolute value over one repeated cell",
}
_FILTER = {
    "conv": "flat filter of unit l2 norm",
    "avgpool": "mean filter",
    "maxpool": "each window routes its gradient to one maximum",
}


def main(argv=None) -> int:
    """``python -m convnet stride``: print the correction factors for kernel 1-7, stride 1-3.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments after ``stride`` (default ``sys.argv[1:]``).

    Returns
    -------
    code : int
        0 on success, 2 on a usage error.
    """
    parser = argparse.ArgumentParser(
        prog="python -m convnet stride",
        description="Gradient-scale correction factors under stride: divide a layer's "
                    "input gradient by the factor to normalise its scale.")
    parser.add_argument("--layer", default="conv", help="conv (default), avgpool or maxpool")
    parser.add_argument("--measure", default=None,
                        help="std (RMS, default) or mad (mean absolute value; default for maxpool)")
    parser.add_argument("--channels", type=int, default=1, help="input channels of the conv filter (default 1)")
    parser.add_argument("--max-kernel", type=int, default=7, help="kernels 1..N (default 7)")
    parser.add_argument("--max-stride", type=int, default=3, help="strides 1..N (default 3)")
    parser.add_argument("--cells", action="store_true", help="also print the 1-D interior counts c")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exc:  # argparse exits on --help and on usage errors; main returns the code
        return int(exc.code or 0)
    measure = args.measure or ("mad" if args.layer == "maxpool" else "std")
    try:
        max_k = check_int("--max-kernel", args.max_kernel, 1)
        max_s = check_int("--max-stride", args.max_stride, 1)
        text = format_table(range(1, max_k + 1), range(1, max_s + 1), args.channels, args.layer, measure,
                            cells=args.cells, markdown=args.markdown)
    except (TypeError, ValueError) as exc:
        print(f"python -m convnet stride: error: {exc}", file=sys.stderr)
        return 2
    channels = f", channels={args.channels}" if args.layer == "conv" else ""
    print(f"Gradient-scale correction factors: layer={args.layer}, measure={measure}{channels}")
    print(f"factor = {_DESCRIPTION[measure]} of the input gradient, upstream gradient all ones, "
          f"{_FILTER[args.layer]}; divide the input gradient by it.")
    print()
    print(text)
    return 0
