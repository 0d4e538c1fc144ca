"""Kernelbus api service."""
