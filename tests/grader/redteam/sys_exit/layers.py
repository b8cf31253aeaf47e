# Red team: SystemExit from inside Conv.forward.
import sys


class Conv(Conv):  # noqa: F821
    @staticmethod
    def forward(x, w, b, conv_param):
        sys.exit(0)
