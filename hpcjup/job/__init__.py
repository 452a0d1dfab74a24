"""What runs on the cluster: the launcher, shipped with each job, and the names of the files it writes.

The launcher (`launcher.py` beside this file) is standard-library only and runs on the
cluster's Python (>= 3.9); hpcjup copies it into the session directory with every job.
"""

from __future__ import annotations

from pathlib import Path

LAUNCHER_FILE = "launcher.py"
LAUNCHER_PATH = Path(__file__).with_name(LAUNCHER_FILE)
#: The files that travel with every job (the launcher imports the others from beside itself).
JOB_FILES = (LAUNCHER_FILE, "jupyterapi.py", "dasklaunch.py")
DASK_DIR = "dask"

SCHEMA = 1
CONNECTION_FILE = "connection.json"
STATE_FILE = "state.json"
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
REASON_AUTH_CONFIG = "auth-config"  # a Jupyter config file disables or replaces the token
REASON_READY_TIMEOUT = "ready-timeout"


def job_files() -> dict[str, bytes]:
    """Name -> code of the files uploaded with each job."""
    return {name: LAUNCHER_PATH.with_name(name).read_bytes() for name in JOB_FILES}


#: Reasons for a session that ended the way it should (not a failure).
NORMAL_ENDS = frozenset({REASON_STOPPED, REASON_WALLTIME, REASON_IDLE, REASON_SHUTDOWN})
