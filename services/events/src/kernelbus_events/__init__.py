"""Kernelbus events service."""
