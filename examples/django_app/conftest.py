"""Django for the example tests, configured once per session to send its
mail to the `smtp_server_session` fixture (smtp_stack's pytest plugin).

    pip install django
    pytest examples/django_app

Django's own test runner (and pytest-django) replace the email backend by
`locmem`, which never speaks SMTP. These tests keep the SMTP backend and
the project's `EMAIL_*` settings, and point them at the sink:
`override_settings` for the host and port, and `SSL_CERT_FILE` so that the
backend's certificate check (`ssl.create_default_context()`) trusts the
sink's run-time CA. Nothing is turned off: the login and the TLS
verification are the ones production runs.
"""
import os

import pytest

try:
    import django
except ImportError:         # Django absent: the tests here are not collected
    collect_ignore_glob = ['test_*.py']
else:
    os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'shop_settings')
    django.setup()


@pytest.fixture(scope='session', autouse=True)
def mail_to_the_sink(smtp_server_session):
    from django.test import override_settings

    host, port = smtp_server_session.address
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('SSL_CERT_FILE', smtp_server_session.ca_file)
        with override_settings(EMAIL_HOST=host, EMAIL_PORT=port,
                               EMAIL_HOST_PASSWORD='test-password'):
            yield
