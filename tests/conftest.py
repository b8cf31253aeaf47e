"""Shared test settings: an unimplemented starter stub is reported as one line, not a traceback."""
from __future__ import annotations

import re

import pytest

_STUB = re.compile(r"^([\w.]+): implement me$")


def stub_name(exc):
    """The stub behind ``exc`` (a NotImplementedError raised by a starter stub, possibly wrapped), or None."""
    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, NotImplementedError):
            m = _STUB.match(str(e))
            if m:
                return m.group(1)
        stack += list(getattr(e, "exceptions", ())) + [e.__cause__, e.__context__]
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.excinfo is not None:
        name = stub_name(call.excinfo.value)
        if name:
            report.longrepr = f"not implemented yet: {name}"
