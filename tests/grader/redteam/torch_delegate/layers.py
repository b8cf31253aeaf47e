# Red team: the naive Conv delegates to PyTorch (and, failing that, to the installed site-packages).
import sys


class Conv(Conv):  # noqa: F821
    @staticmethod
    def forward(x, w, b, conv_param):
        sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_Blocker"]
        sys.path.append("@SITE@")
        import torch
        import torch.nn.functional as F
        out = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                       stride=conv_param["stride"], padding=conv_param["pad"]).numpy()
        return out, (x, w, b, conv_param)
