"""Lets the example tests run from a checkout that is not pip-installed.

Installed, smtp_stack registers its pytest plugin (the `smtp_server` and
`smtp_server_session` fixtures, the `smtp_server` marker, the ini keys)
through the `pytest11` entry point and this file does nothing.
"""
import smtp_stack.pytest_plugin as plugin


def pytest_configure(config):
    if not config.pluginmanager.is_registered(plugin):
        config.pluginmanager.register(plugin, 'smtp_stack.pytest_plugin')
