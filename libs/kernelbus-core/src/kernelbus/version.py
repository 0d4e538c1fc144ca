"""The version of Kernelbus's contracts (`kernelbus` is a namespace package: no `__init__`)."""

__version__ = "0.1.0"
