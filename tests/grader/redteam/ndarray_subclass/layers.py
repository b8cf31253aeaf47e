# Red team: return an ndarray subclass that claims to equal anything.
import numpy as np


class Liar(np.ndarray):
    def __eq__(self, other):
        return True

    def __array_finalize__(self, obj):
        pass


class Conv(Conv):  # noqa: F821
    @staticmethod
    def forward(x, w, b, conv_param):
        out, cache = Conv.__mro__[1].forward(x, w, b, conv_param)
        return (out * 0).view(Liar), cache
