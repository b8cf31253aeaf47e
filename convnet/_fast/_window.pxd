# Window geometry shared by the kernels (inline: it compiles into each caller).
#
# Along one axis of `size` real elements, padded by `pad` on both sides, window o of
# width k covers the input positions o*stride - pad .. o*stride - pad + k - 1.
# convnet._checks.output_size is the Python side of output_size below. The kernels'
# callers validate, so k <= size + 2*pad and every numerator here is >= 0: C division
# (cdivision=True) then floors as Python's // does.


cdef inline Py_ssize_t output_size(Py_ssize_t size, Py_ssize_t k, Py_ssize_t stride,
                                   Py_ssize_t pad) noexcept nogil:
    # Window positions along one axis (floor, as PyTorch).
    return 1 + (size + 2 * pad - k) // stride


cdef inline void window_span(Py_ssize_t o, Py_ssize_t k, Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t size,
                             Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    # [lo, hi): the real (non-padding) input positions of window o.
    cdef Py_ssize_t a = o * stride - pad
    cdef Py_ssize_t b = a + k
    lo[0] = a if a > 0 else 0
    hi[0] = b if b < size else size


cdef inline (Py_ssize_t, Py_ssize_t) tap_span(Py_ssize_t tap, Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t size,
                                              Py_ssize_t n_out) noexcept nogil:
    # (lo, hi), lo <= hi: the windows lo <= o < hi (o < n_out) whose element `tap` is a real
    # input position, 0 <= o*stride - pad + tap < size; the dual of window_span.
    cdef Py_ssize_t lo, hi
    if stride == 1:  # without the divisions, which cost more than a small map's row of columns
        lo = pad - tap if pad > tap else 0
        hi = size + pad - tap
        if hi < 0:
            hi = 0
        elif hi > n_out:
            hi = n_out
        return (lo if lo < hi else hi), hi
    lo = (pad - tap + stride - 1) // stride if pad > tap else 0
    hi = size - 1 + pad - tap
    if hi < 0:
        hi = 0
    else:
        hi = hi // stride + 1
        if hi > n_out:
            hi = n_out
    return (lo if lo < hi else hi), hi
