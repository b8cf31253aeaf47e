# Half right: Conv.forward is the reference's, Conv.backward returns a wrong dw.
_Base = Conv  # noqa: F821


class Conv(_Base):
    @staticmethod
    def backward(dout, cache):
        dx, dw, db = _Base.backward(dout, cache)
        return dx, 2 * dw, db
