"""pytest plugin (entry point `pytest11`): the `smtp_server` fixture."""
import pytest

from .testing import MailSink


@pytest.fixture
def smtp_server():
    """A running MailSink on 127.0.0.1 and a free port, stopped after the test."""
    with MailSink() as sink:
        yield sink
