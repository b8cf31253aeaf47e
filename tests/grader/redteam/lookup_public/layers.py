# Red team: answer from a table of the public inputs' expected outputs (shipped with the starter),
# keyed by the input's bytes; nothing is computed.
import hashlib

import numpy as np

_TABLE = @TABLE@


def _lookup(*arrays):
    key = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()
    return _TABLE.get(key)


class Conv(Conv):  # noqa: F821
    @staticmethod
    def forward(x, w, b, conv_param):
        hit = _lookup(x, w, b)
        out, cache = Conv.__mro__[1].forward(x, w, b, conv_param)
        return (np.array(hit) if hit is not None else np.zeros_like(out)), cache
