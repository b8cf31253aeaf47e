# Red team: the naive Conv delegates to the provided fast path.


class Conv(Conv):  # noqa: F821
    @staticmethod
    def forward(x, w, b, conv_param):
        from convnet.fast import FastConv
        return FastConv.forward(x, w, b, conv_param)

    @staticmethod
    def backward(dout, cache):
        from convnet.fast import FastConv
        return FastConv.backward(dout, cache)
