"""The test mini-cluster: `python -m tests.cluster up|down|status`."""
