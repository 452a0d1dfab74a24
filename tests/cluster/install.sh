#!/usr/bin/env bash
# Install what the mini-cluster and browser tests need, on Debian 12 as root. Idempotent:
# skips apt when every binary is there, and the venv when it already has JupyterLab.
set -euo pipefail

need_apt=0
for bin in sbatch slurmctld slurmd munged /usr/sbin/sshd chromium chromedriver oathtool ssh-keygen; do
    command -v "$bin" >/dev/null 2>&1 || need_apt=1
done
if [ "$need_apt" = 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends slurm-wlm munge openssh-server openssh-client \
        chromium chromium-driver oathtool libpam-google-authenticator python3-venv procps
fi

env=/opt/hpcjup-cluster-env
if ! "$env/bin/python" -c 'import jupyterlab, jupyter_server, distributed' >/dev/null 2>&1; then
    /usr/bin/python3 -m venv "$env"
    "$env/bin/pip" install -q --disable-pip-version-check jupyterlab 'jupyter_server>=2.20' distributed dask-jobqueue
fi
chmod -R a+rX "$env"  # the cluster user's jobs run this Python
