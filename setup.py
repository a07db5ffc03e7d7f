"""Only here because cffi's out-of-line API mode hooks into setup() (cffi_modules)."""
from setuptools import setup

setup(cffi_modules=["codemem/_native_build.py:ffibuilder"])
