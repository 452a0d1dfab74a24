"""The job script of an image session with Dask on several nodes: the host-side relay (job/relay.sh) first.

Rendered for every batch system that launches per host (Slurm, PBS, LSF, Grid Engine): the relay is the job's main
process on the host; the launcher, its child, runs in the image and keeps the scheduler's per-host launch (no
`env -u HPCJUP_LAUNCH` before it); the workers' command (--python-command) is the image's, as worker groups' is.
Anything else renders as before: one node, no Dask, no image, or the laptop's Podman.
"""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from hpcjup.config.resources import Resources
from hpcjup.schedulers import get_scheduler
from hpcjup.session.jobscript import launcher_command, render_job
from hpcjup.session.layout import SessionPaths
from hpcjup.session.request import DaskRequest, StartRequest

PATHS = SessionPaths("/home/u", "lab")
OUTSIDE = ["env", "-u", "HPCJUP_LAUNCH"]
SCHEDULERS = ("slurm", "pbs", "lsf", "sge")


class Settings:
    """A stand-in for Resolved: just .value(key)."""

    def __init__(self, **values: Any) -> None:
        self.values = values

    def value(self, key: str) -> Any:
        return self.values.get(key)


def request(nodes: int = 2, dask: bool = True, **settings: Any) -> StartRequest:
    values = {"image": "/home/u/img.sif", "python": "/env/bin/python", **settings}
    return StartRequest(
        resources=Resources(nodes=nodes, time="1:00:00"),
        name="lab",
        dask=DaskRequest() if dask else None,
        settings=Settings(**values),  # type: ignore[arg-type]
    )


def exec_line(script: str) -> list[str]:
    line = [line for line in script.splitlines() if line.startswith("exec ")][-1]  # the last: the launcher
    return shlex.split(line)[1:]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize(
    ("image", "runtime"), [("/home/u/img.sif", ["apptainer", "exec"]), ("/home/u/img.ch", ["ch-run", "-b", "/home/u"])]
)
def test_the_relay_runs_the_launcher_in_the_image(scheduler: str, image: str, runtime: list[str]) -> None:
    script = render_job(PATHS, get_scheduler(scheduler), request(image=image))
    argv = exec_line(script)
    assert argv[:3] == ["sh", PATHS.file("relay.sh"), "--"], argv
    assert argv[3 : 3 + len(runtime)] == runtime, argv  # the launcher in the image, the per-host launch kept
    assert argv[argv.index(PATHS.launcher) - 1] == "/env/bin/python"
    workers = shlex.split(argv[argv.index("--python-command") + 1])
    assert workers[:5] == [*OUTSIDE, *runtime[:2]] and workers[-1] == "/env/bin/python", workers
    assert "--dask" in argv
    assert any(line.startswith("export HPCJUP_LAUNCH=") for line in script.splitlines())  # the relay reads it


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize(
    "req",
    [
        request(nodes=1),  # the launcher starts its workers beside itself, in the image
        request(dask=False),  # nothing to launch per host
        request(image=None),  # no image: the launcher runs on the host and launches itself
        request(container_runtime="podman"),  # the laptop's engine (--local): one host
    ],
    ids=["one-node", "no-dask", "no-image", "podman"],
)
def test_no_relay_where_nothing_needs_one(scheduler: str, req: StartRequest) -> None:
    argv = launcher_command(req, PATHS, get_scheduler(scheduler))
    assert "sh" not in argv[:1] and PATHS.file("relay.sh") not in argv, argv
    if req.settings and req.settings.value("image") and req.settings.value("container_runtime") != "podman":
        assert argv[:3] == OUTSIDE, argv  # as before: the per-host launch out of the image's reach
