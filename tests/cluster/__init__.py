"""The test mini-cluster harness: `python -m tests.cluster up|down|status`."""
