"""Tests for hpcjup; the mini-cluster harness lives in tests/cluster."""

pytest_plugins = ["tests.cluster.fixtures"]
