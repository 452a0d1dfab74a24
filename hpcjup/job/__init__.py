"""What runs on the cluster: the launcher, shipped with each job, and the names of the files it writes.

The launcher (`launcher.py` beside this file) is standard-library only and runs on the
cluster's Python (>= 3.9); hpcjup copies it into the session directory with every job.
The names the laptop and the job share (files, end reasons, exit codes, the job's environment)
are contract.py's, re-exported here for the laptop.
"""

from __future__ import annotations

from pathlib import Path

from hpcjup.job.contract import ADAPTIVE_DIR as ADAPTIVE_DIR
from hpcjup.job.contract import ADAPTIVE_STATUS as ADAPTIVE_STATUS
from hpcjup.job.contract import ADAPTIVE_TOKEN as ADAPTIVE_TOKEN
from hpcjup.job.contract import CONNECTION_FILE as CONNECTION_FILE
from hpcjup.job.contract import DASK_DIR as DASK_DIR
from hpcjup.job.contract import ENV_ACCOUNT as ENV_ACCOUNT
from hpcjup.job.contract import ENV_CPUS as ENV_CPUS
from hpcjup.job.contract import ENV_JOB_ID as ENV_JOB_ID
from hpcjup.job.contract import ENV_JOBQUEUE as ENV_JOBQUEUE
from hpcjup.job.contract import ENV_LAUNCH as ENV_LAUNCH
from hpcjup.job.contract import ENV_MEMORY_KB as ENV_MEMORY_KB
from hpcjup.job.contract import ENV_NODE as ENV_NODE
from hpcjup.job.contract import ENV_NODELIST as ENV_NODELIST
from hpcjup.job.contract import ENV_PARTITION as ENV_PARTITION
from hpcjup.job.contract import ENV_RESTARTS as ENV_RESTARTS
from hpcjup.job.contract import ENV_SCHEDULER as ENV_SCHEDULER
from hpcjup.job.contract import ENV_SCRUB as ENV_SCRUB
from hpcjup.job.contract import ENV_SCRUB_KEEP as ENV_SCRUB_KEEP
from hpcjup.job.contract import ENV_SUBMIT as ENV_SUBMIT
from hpcjup.job.contract import ENV_TIME_LIMIT as ENV_TIME_LIMIT
from hpcjup.job.contract import ENV_WARN_SECONDS as ENV_WARN_SECONDS
from hpcjup.job.contract import ENV_WARN_SIGNAL as ENV_WARN_SIGNAL
from hpcjup.job.contract import ENVLOCAL_WARNINGS as ENVLOCAL_WARNINGS
from hpcjup.job.contract import EXIT_CODES as EXIT_CODES
from hpcjup.job.contract import GROUPS_FILE as GROUPS_FILE
from hpcjup.job.contract import JOB_LOG as JOB_LOG
from hpcjup.job.contract import JOB_SCRIPT as JOB_SCRIPT
from hpcjup.job.contract import JOBS_FILE as JOBS_FILE
from hpcjup.job.contract import MIN_SERVER as MIN_SERVER
from hpcjup.job.contract import NORMAL_ENDS as NORMAL_ENDS
from hpcjup.job.contract import REASON_AUTH_CONFIG as REASON_AUTH_CONFIG
from hpcjup.job.contract import REASON_DASK_FAILED as REASON_DASK_FAILED
from hpcjup.job.contract import REASON_IDLE as REASON_IDLE
from hpcjup.job.contract import REASON_JUPYTER_EXITED as REASON_JUPYTER_EXITED
from hpcjup.job.contract import REASON_JUPYTER_TOO_OLD as REASON_JUPYTER_TOO_OLD
from hpcjup.job.contract import REASON_NO_DASK as REASON_NO_DASK
from hpcjup.job.contract import REASON_NO_IPYKERNEL as REASON_NO_IPYKERNEL
from hpcjup.job.contract import REASON_NO_JUPYTER as REASON_NO_JUPYTER
from hpcjup.job.contract import REASON_READY_TIMEOUT as REASON_READY_TIMEOUT
from hpcjup.job.contract import REASON_SHUTDOWN as REASON_SHUTDOWN
from hpcjup.job.contract import REASON_STOPPED as REASON_STOPPED
from hpcjup.job.contract import REASON_WALLTIME as REASON_WALLTIME
from hpcjup.job.contract import RELAY_FILE as RELAY_FILE
from hpcjup.job.contract import RELAY_VARIABLE as RELAY_VARIABLE
from hpcjup.job.contract import RUNTIME_DIR as RUNTIME_DIR
from hpcjup.job.contract import SCHEMA as SCHEMA
from hpcjup.job.contract import SETUP_FILE as SETUP_FILE
from hpcjup.job.contract import STATE_FILE as STATE_FILE
from hpcjup.job.contract import TOKEN_FILE as TOKEN_FILE
from hpcjup.job.contract import USAGE_FILE as USAGE_FILE
from hpcjup.job.contract import WRAP_VARIABLE as WRAP_VARIABLE

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
    "relayed.py",
    "daskscale.py",
    "daskhttp.py",
    "adaptive.py",
    "adaptpolicy.py",
    "daskretire.py",
    "private.py",
    "lifeline.py",
    "rerun.py",
    "envlocal.sh",
    RELAY_FILE,  # relay.sh: per-host launches for a launcher in an image
)
#: The sh that brings the session's environment images to each node's local storage (envlocal.sh's header).
ENVLOCAL_FILE = "envlocal.sh"
#: Where the Dask dashboard is, below Jupyter's base_url (jupyter-server-proxy; dasklaunch.DASHBOARD_PATH).
DASHBOARD_PATH = "dask-dashboard/status"


def job_files() -> dict[str, bytes]:
    """Name -> code of the files uploaded with each job."""
    return {name: LAUNCHER_PATH.with_name(name).read_bytes() for name in JOB_FILES}
