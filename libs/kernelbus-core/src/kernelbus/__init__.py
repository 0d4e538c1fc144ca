"""Kernelbus shared contracts: what every service agrees on, written once."""

__version__ = "0.1.0"
