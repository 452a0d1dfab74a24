"""What runs on the cluster: the launcher, shipped with each job, and the names of the files it writes.

The launcher (`launcher.py` beside this file) is standard-library only and runs on the
cluster's Python (>= 3.9); hpcjup copies it into the session directory with every job.
"""

from __future__ import annotations

from pathlib import Path

from hpcjup.job.contract import MIN_SERVER as MIN_SERVER
from hpcjup.job.contract import SCHEMA as SCHEMA

LAUNCHER_FILE = "launcher.py"
LAUNCHER_PATH = Path(__file__).with_name(LAUNCHER_FILE)
#: The files that travel with every job (the launcher imports the others from beside itself).
JOB_FILES = (
    LAUNCHER_FILE,
    "contract.py",
    "atomic.py",
    "endings.py",
    "jupyterenv.py",
    "kernels.py",
    "jupyterapi.py",
    "jupyterboot.py",
    "jupyterproc.py",
    "lazy.py",
    "usage.py",
    "dasklaunch.py",
    "daskscale.py",
    "daskhttp.py",
    "private.py",
    "lifeline.py",
)
DASK_DIR = "dask"
#: Where the Dask dashboard is, below Jupyter's base_url (jupyter-server-proxy; dasklaunch.DASHBOARD_PATH).
DASHBOARD_PATH = "dask-dashboard/status"

CONNECTION_FILE = "connection.json"
STATE_FILE = "state.json"
USAGE_FILE = "usage.json"  # what the session used, for `hpcjup stats` (usage.py beside the launcher)
TOKEN_FILE = "token"
RUNTIME_DIR = "runtime"
SETUP_FILE = "setup.sh"  # the environment's setup lines, sourced by the job and by worker jobs

# Why a session ended, as the launcher records it in state.json.
REASON_STOPPED = "stopped"
REASON_WALLTIME = "walltime"
REASON_IDLE = "idle"
REASON_SHUTDOWN = "shutdown"  # File > Shut Down in JupyterLab
REASON_JUPYTER_EXITED = "jupyter-exited"
REASON_NO_JUPYTER = "no-jupyter"
REASON_JUPYTER_TOO_OLD = "jupyter-too-old"
REASON_NO_IPYKERNEL = "no-ipykernel"  # a --kernel Python without ipykernel (or none at that path)
REASON_AUTH_CONFIG = "auth-config"  # a Jupyter config file disables or replaces the token
REASON_READY_TIMEOUT = "ready-timeout"


# -- the job's environment: the only way the launcher learns about its batch system -------------
# Every adapter's rendered script exports these (schedulers/<name>.py, `job_environment`); the
# launcher and dasklaunch.py read nothing else (never a batch system's own variables). The job's
# names carry JOB_ where a user setting of the same name exists (HPCJUP_PARTITION is a setting).
ENV_SCHEDULER = "HPCJUP_JOB_SCHEDULER"  # the adapter's name: slurm, pbs, lsf, sge, none, local
ENV_JOB_ID = "HPCJUP_JOB_ID"
ENV_NODE = "HPCJUP_NODE"  # this node's short host name
ENV_NODELIST = "HPCJUP_NODELIST"  # the allocation's hosts, space-separated, each once, this node first
ENV_CPUS = "HPCJUP_CPUS"  # CPUs the job may use on each node
# Shell words that run one command on a host of the allocation: `{host}` and `{cpus}` are filled in,
# the command's argv follows (each adapter's own: see schedulers/NAME.py `job_environment`).
# Empty: the allocation is this host only; the command runs here.
ENV_LAUNCH = "HPCJUP_LAUNCH"
ENV_TIME_LIMIT = "HPCJUP_TIME_LIMIT"  # seconds granted (0: unknown, or none)
ENV_WARN_SIGNAL = (
    "HPCJUP_WARN_SIGNAL"  # "1": the scheduler sends SIGUSR1 before the limit; else the launcher's own timer
)
ENV_WARN_SECONDS = "HPCJUP_WARN_SECONDS"  # how long before the limit the session shuts down
ENV_PARTITION = "HPCJUP_JOB_PARTITION"  # the queue/partition the job runs in (the notebook's jobqueue default)
ENV_ACCOUNT = "HPCJUP_JOB_ACCOUNT"  # the account/project it is charged to
ENV_JOBQUEUE = "HPCJUP_JOBQUEUE"  # dask-jobqueue's name for this scheduler (slurm, pbs, lsf, sge); empty: none
ENV_SUBMIT = "HPCJUP_SUBMIT"  # the submit command the notebook's jobqueue runs (wrapped to record job ids)
ENV_SCRUB = "HPCJUP_SCRUB"  # a variable prefix to drop before submitting from inside the job (the scheduler's)
ENV_SCRUB_KEEP = "HPCJUP_SCRUB_KEEP"  # space-separated names under that prefix to keep (its config file's)


def job_files() -> dict[str, bytes]:
    """Name -> code of the files uploaded with each job."""
    return {name: LAUNCHER_PATH.with_name(name).read_bytes() for name in JOB_FILES}


#: Reasons for a session that ended the way it should (not a failure).
NORMAL_ENDS = frozenset({REASON_STOPPED, REASON_WALLTIME, REASON_IDLE, REASON_SHUTDOWN})
