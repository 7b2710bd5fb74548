"""A shim for tools that still run `python setup.py`: everything is in pyproject.toml."""
from setuptools import setup

setup()
