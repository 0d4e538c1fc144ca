"""Kernelbus culler service."""
