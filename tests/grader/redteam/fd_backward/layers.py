# Red team: a correct but slow Conv.backward computed by finite differences of the forward.
import numpy as np

_Base = Conv  # noqa: F821


class Conv(_Base):
    @staticmethod
    def backward(dout, cache):
        x0, w0, b0, conv_param = cache
        x, w, b = (a.astype(np.float64) for a in (x0, w0, b0))
        dout = dout.astype(np.float64)
        grads = []
        for a in (x, w, b):
            g = np.zeros_like(a)
            flat, gflat = a.reshape(-1), g.reshape(-1)
            for i in range(flat.size):
                old = flat[i]
                flat[i] = old + 1e-5
                plus = _Base.forward(x, w, b, conv_param)[0]
                flat[i] = old - 1e-5
                minus = _Base.forward(x, w, b, conv_param)[0]
                flat[i] = old
                gflat[i] = np.sum((plus - minus) * dout) / 2e-5
            grads.append(g.astype(x0.dtype))
        return tuple(grads)
