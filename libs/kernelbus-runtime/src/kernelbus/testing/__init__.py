"""Test support shared by every service's tests: real nats-server, isolated Jupyter dirs,
service processes started and stopped by pid."""
