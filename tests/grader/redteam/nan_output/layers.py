# Red team: NaN everywhere from MaxPool.forward (NaN compares false, never "too far").
import numpy as np


class MaxPool(MaxPool):  # noqa: F821
    @staticmethod
    def forward(x, pool_param):
        out, cache = MaxPool.__mro__[1].forward(x, pool_param)
        return np.full_like(out, np.nan), cache
