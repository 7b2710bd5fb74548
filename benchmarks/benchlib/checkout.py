"""Importing smtp_stack from another checkout (an A/B of two trees)."""
import os
import sys


def use_checkout(path: str) -> None:
    """Make `import smtp_stack` load the checkout at `path`: an editable
    install's finder would otherwise win over sys.path, so it is dropped."""
    sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]
    sys.path.insert(0, os.path.abspath(path))
