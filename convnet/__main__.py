"""``python -m convnet COMMAND`` (also the ``convnet`` console script).

Commands: ``check`` (layers against finite differences), ``stride`` (the
overlap table of strided windows), ``train`` (a ThreeLayerConvNet on digits).
"""
from __future__ import annotations

import importlib
import sys

# Each command lives in its own module exposing main(argv) -> int; imported lazily.
COMMANDS = {
    "check": ("convnet.selfcheck", "compare every layer's backward with finite differences"),
    "stride": ("convnet.stride_table", "print the gradient-scale table for kernel 1-7, stride 1-3"),
    "train": ("convnet.train", "train a ThreeLayerConvNet on the packaged digits"),
}


def _usage() -> str:
    lines = ["usage: python -m convnet COMMAND [options]", "", "commands:"]
    lines += [f"  {name:8s} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
