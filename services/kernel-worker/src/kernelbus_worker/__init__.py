"""Kernelbus kernel-worker service."""
