"""Django settings of a shop that mails through its provider: the `EMAIL_*`
settings, from the environment, as a deployed project has them.

Django's SMTP backend logs in whenever EMAIL_HOST_USER and
EMAIL_HOST_PASSWORD are set, and with EMAIL_USE_TLS it verifies the
server's certificate against the system's trust (`ssl.create_default_context()`).
"""
import os

SECRET_KEY = 'an example project, not a secret'
INSTALLED_APPS: list = []
USE_TZ = True

EMAIL_BACKEND = 'django.core.mail.backends.smtp.EmailBackend'
EMAIL_HOST = os.environ.get('EMAIL_HOST', 'smtp.provider.example')
EMAIL_PORT = int(os.environ.get('EMAIL_PORT', '587'))
EMAIL_HOST_USER = os.environ.get('EMAIL_HOST_USER', 'shop@shop.example')
EMAIL_HOST_PASSWORD = os.environ.get('EMAIL_HOST_PASSWORD', '')
EMAIL_USE_TLS = True
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = 'orders@shop.example'
