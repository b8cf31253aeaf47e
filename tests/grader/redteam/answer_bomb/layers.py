# Red team: answer with arrays far larger than asked for, to drive the parent out of memory.
import numpy as np


class Conv(Conv):  # noqa: F821
    @staticmethod
    def forward(x, w, b, conv_param):
        out, cache = Conv.__mro__[1].forward(x, w, b, conv_param)
        return np.ones(120_000_000), cache
