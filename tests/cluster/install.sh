#!/usr/bin/env bash
# Install what the mini-cluster and browser tests need, as root on Debian 12. Idempotent: apt runs
# only when a binary is missing, pip only when the cluster env lacks a working JupyterLab.
set -euo pipefail
umask 022  # the cluster user's jobs must be able to read the env

if [ "$(id -u)" != 0 ]; then
    echo "install.sh: must run as root" >&2
    exit 1
fi

ENV_DIR=/opt/hpcjup-cluster-env
# Lmod (JUWELS, JURECA) beside Environment Modules: Debian's lmod and environment-modules conflict (each
# Conflicts: the other), so environment-modules is installed and lmod is unpacked here, its Lua libraries from apt.
LMOD_DIR=/opt/hpcjup-lmod
PACKAGES=(slurm-wlm munge openssh-server chromium chromium-driver oathtool libpam-google-authenticator zsh fish tcsh
          environment-modules charliecloud-runtime charliecloud-builders podman  # containers (issue 21)
          docker-registry debootstrap  # a local registry and the rootfs of its test image (tests/cluster/registry.py)
          sshfs squashfuse squashfs-tools  # a slow shared filesystem, and environments as one SquashFS file
          lua5.3 lua-posix lua-filesystem lua-json lua-term tcl  # what lmod depends on
          python3 python3-venv  # Debian's python3 has no ensurepip (so no venv) without python3-venv
          gridengine-master gridengine-exec gridengine-client)  # Son of Grid Engine 8.1.9 (tests/cluster/sge.py)
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

env_works() {
    [ -x "$ENV_DIR/bin/jupyter-lab" ] && "$ENV_DIR/bin/python" - <<'EOF' >/dev/null 2>&1
import cryptography, dask_jobqueue, distributed, jupyter_server, jupyter_server_proxy, jupyterlab
assert tuple(int(x) for x in jupyter_server.__version__.split(".")[:2]) >= (2, 20)
EOF
}

lmod_works() {
    [ -r "$LMOD_DIR/usr/share/lmod/lmod/init/sh" ] &&
        env -i PATH=/usr/bin:/bin MODULESHOME="$LMOD_DIR/usr/share/lmod/lmod" \
            sh -c '. "$MODULESHOME/init/sh" && module --version' >/dev/null 2>&1
}

need_apt=0
for bin in sbatch slurmctld slurmd munged sshd chromium chromedriver oathtool ssh-keygen zsh fish tcsh ch-run \
    ch-image podman docker-registry debootstrap sshfs squashfuse mksquashfs lua5.3 tclsh \
    sge_qmaster sge_execd qsub qacct; do
    command -v "$bin" >/dev/null 2>&1 || { echo "install.sh: $bin is missing" >&2; need_apt=1; }
done
[ -r /usr/share/modules/init/sh ] || need_apt=1
lua5.3 -e 'require "posix"; require "lfs"; require "json"; require "term"' >/dev/null 2>&1 || need_apt=1
if ! env_works && ! { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1; }; then
    need_apt=1
fi

if [ "$need_apt" = 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' init scripts from starting system munge/ssh/slurm daemons.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    # gridengine-common asks where the cell lives: the default cell, this host as its master.
    debconf-set-selections <<EOF
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string $(hostname -s)
EOF
    apt-get update
    apt-get install -y "${PACKAGES[@]}"
else
    echo "install.sh: Debian packages already installed"
fi

if lmod_works; then
    echo "install.sh: $LMOD_DIR already has Lmod"
else
    # Unpack Debian's lmod (not installed: it conflicts with environment-modules) and point its paths here.
    work=$(mktemp -d)
    chown _apt "$work" 2>/dev/null || true  # apt downloads as _apt where it can
    (cd "$work" && { apt-get download lmod || { apt-get update && apt-get download lmod; }; })
    rm -rf "$LMOD_DIR"
    dpkg -x "$work"/lmod_*.deb "$LMOD_DIR"
    rm -rf "$work"
    grep -rlIZ -e /usr/share/lmod -e /usr/lib/lmod -e /etc/lmod "$LMOD_DIR" | xargs -0 sed -i \
        -e "s#/usr/share/lmod#$LMOD_DIR/usr/share/lmod#g" -e "s#/usr/lib/lmod#$LMOD_DIR/usr/lib/lmod#g" \
        -e "s#/etc/lmod#$LMOD_DIR/etc/lmod#g"
    chmod -R a+rX "$LMOD_DIR"
    lmod_works || { echo "install.sh: Lmod in $LMOD_DIR does not start" >&2; exit 1; }
fi

if env_works; then
    echo "install.sh: $ENV_DIR already has JupyterLab"
else
    /usr/bin/python3 -m venv "$ENV_DIR"  # the system Python: a root-only interpreter (pyenv) fails in jobs
    "$ENV_DIR/bin/python" -m pip install --disable-pip-version-check -q \
        jupyterlab 'jupyter_server>=2.20' distributed dask-jobqueue \
        jupyter-server-proxy dask-labextension cryptography
    chmod -R a+rX "$ENV_DIR"
    env_works || { echo "install.sh: $ENV_DIR still cannot import JupyterLab" >&2; exit 1; }
fi
