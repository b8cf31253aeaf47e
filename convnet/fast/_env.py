"""Boolean environment switches (``CONVNET_*``), parsed one way for the build and the package.

``setup.py`` loads this file by its path while it builds the kernels, when the
package itself cannot be imported yet, so it depends on nothing but :mod:`os`.
"""
import os

# The spellings that switch a flag on; anything else (unset, empty, "0", "no") leaves it off.
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})


def flag(name: str, environ=None) -> bool:
    """True when the environment variable ``name`` is 1, true, yes or on (any case, spaces ignored).

    Parameters
    ----------
    name : str
        The variable, e.g. ``"CONVNET_PUREPYTHON"``.
    environ : mapping, optional
        Where to look it up (default: ``os.environ``).
    """
    value = (os.environ if environ is None else environ).get(name, "")
    return value.strip().lower() in TRUE_VALUES
