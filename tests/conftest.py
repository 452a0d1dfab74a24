"""Tests for hpcjup; the mini-cluster harness lives in tests/cluster.

The suite has two tiers, which tests/run.sh runs one after the other:
- the unit tier, `-m "not cluster"`: no mini-cluster, run on every core (pytest-xdist `-n 2`);
- the cluster tier, `-m cluster`: the real Slurm, Grid Engine, sshd and browser, one test at a time
  (the tests share one cluster and count its jobs, logins and sessions).
Which tier a test belongs to is not left to memory: every test whose fixtures reach the mini-cluster
(`minicluster`, `sge_cell`, `node_sshd`, or a fixture that uses one) is marked `cluster` here. A test
that reaches the cluster some other way (request.getfixturevalue) marks itself; if it forgets, the
unit tier stops it with a message saying so, rather than letting it race the cluster tier.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.cluster.fixtures"]

CLUSTER_FIXTURES = frozenset({"minicluster", "sge_cell", "node_sshd"})
UNIT_TIER = "HPCJUP_UNIT_TIER"  # set by tests/run.sh for the parallel unit tier


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `cluster` every test whose fixture closure reaches the mini-cluster."""
    for item in items:
        if CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("cluster") is None:
            item.add_marker(pytest.mark.cluster)


class UnitTierGuard:
    """In the unit tier, a test that reaches the mini-cluster fails and says how to mark it.

    A plugin object, not a conftest hook: the session-scoped cluster fixtures are set up through the
    session's hooks, which see only the conftests at the root directory, not this one."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest) -> None:
        if fixturedef.argname in CLUSTER_FIXTURES:
            pytest.fail(
                f"this test uses the mini-cluster ({fixturedef.argname}) but is not marked `cluster`: add "
                "pytest.mark.cluster to it (or to its module's pytestmark), so it runs in the serial cluster tier",
                pytrace=False,
            )


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(UNIT_TIER) == "1":
        config.pluginmanager.register(UnitTierGuard(), "hpcjup-unit-tier-guard")
