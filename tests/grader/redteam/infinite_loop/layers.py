# Red team: never return from Conv.forward.


class Conv(Conv):  # noqa: F821
    @staticmethod
    def forward(x, w, b, conv_param):
        while True:
            pass
