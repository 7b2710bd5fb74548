"""Optional extras: a feature whose extra is not installed stops with one
sentence that names the extra and the command that installs it, never
with a bare `ModuleNotFoundError` from deep inside a library.

    with needs_extra('policies', 'smtp_stack.policies'):
        import dns.message
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class MissingExtra(ImportError):
    """An optional dependency is missing: `str(exc)` says what to install.

    A subclass of ImportError, so code that guards an import with
    `except ImportError` keeps working; the CLI prints it as one line and
    exits with status 2.
    """

    def __init__(self, feature: str, extra: str, module: str | None = None):
        missing = f' ({module} is not installed)' if module else ''
        super().__init__(f"{feature} needs the '{extra}' extra: "
                         f"pip install 'smtp_stack[{extra}]'{missing}", name=module)
        self.feature = feature
        self.extra = extra


@contextmanager
def needs_extra(extra: str, feature: str) -> Iterator[None]:
    """Turn the ImportError of a missing third-party package, raised in the
    block, into MissingExtra. An ImportError of our own modules is a bug,
    not a missing extra, and passes through unchanged."""
    try:
        yield
    except MissingExtra:
        raise
    except ImportError as exc:
        top = (exc.name or '').partition('.')[0]
        if not top or top == 'smtp_stack':
            raise
        raise MissingExtra(feature, extra, top) from exc
