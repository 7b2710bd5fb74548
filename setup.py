import os

from setuptools import find_packages, setup


def requirements(extra: str) -> list:
    """requirements/EXTRA.txt: one requirement a line, '#' comments."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'requirements', f'{extra}.txt')
    with open(path, encoding='utf-8') as f:
        return [line.split('#', 1)[0].strip() for line in f if line.split('#', 1)[0].strip()]


POLICIES = requirements('policies')
INBOX = requirements('inbox')
INBOX_TEST = requirements('inbox-test')     # selenium, flask, gunicorn: tests only

setup(
    name='smtp_stack',
    version='0.1.0',
    description='A configurable SMTP/LMTP server library and mail receiver on gevent',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['smtp_stack', 'smtp_stack.*']),
    package_data={'smtp_stack.inbox': ['static/*']},     # the inbox's web page
    python_requires='>=3.10',
    install_requires=['gevent>=23.9', 'cryptography>=41', 'pyyaml>=6'],
    extras_require={
        'policies': POLICIES,
        'inbox': INBOX,
        'test': ['pytest>=7', 'hypothesis>=6'] + POLICIES + INBOX + INBOX_TEST,
        'bench': ['aiosmtpd>=1.4', 'uvloop>=0.19'],
    },
    entry_points={
        'pytest11': ['smtp_stack = smtp_stack.pytest_plugin'],
        'console_scripts': ['smtp-stack = smtp_stack.cli:main'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Communications :: Email :: Mail Transport Agents',
    ],
)
