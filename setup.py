from setuptools import find_packages, setup

setup(
    name='smtp_stack',
    version='0.1.0',
    description='A configurable SMTP/LMTP server library and mail receiver on gevent',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['smtp_stack', 'smtp_stack.*']),
    python_requires='>=3.10',
    install_requires=['gevent>=23.9', 'cryptography>=41', 'pyyaml>=6'],
    extras_require={
        'test': ['pytest>=7', 'hypothesis>=6'],
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
