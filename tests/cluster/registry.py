"""A real container registry on loopback, holding one real test image, for the container tests.

    with Registry() as reg:          # distribution 2.8 (Debian's docker-registry) on 127.0.0.1:PORT, TLS
        reg.ref                      # docker://localhost:PORT/hpcjup/test:1
        reg.push_tag("moving", "a")  # the same image with one label changed, under another tag: moves that tag

There is no Docker Hub here. The image is built from a rootfs, not pulled: a Debian bookworm minbase from
Debian's mirror (`debootstrap --include=python3`, about 45 s, once per machine: cached as a tar under
CACHE) with its documentation stripped (125 MB), a marker file only the image has (MARKER), and empty mount
points for the cluster user's home and the mini-cluster's Jupyter env, which the tests bind into the
container (`binds`): Python itself (/usr/bin/python3 and its standard library) comes from the image, so
what runs there runs inside it; JupyterLab and Dask are the cluster env's (a 440 MB copy in every pull would
cost the CI run more than it proves). Podman imports the tar and pushes it (once: the registry's storage
is cached too). The registry speaks TLS with a self-signed certificate for localhost that the machine's
trust store takes (update-ca-certificates: ch-image's requests and Podman read it): ch-image talks only
HTTPS to registries, as real sites' registries do.

Needs root, debootstrap, docker-registry and podman (tests/cluster/install.sh).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

__all__ = ["CACHE", "MARKER", "MARKER_TEXT", "Registry", "missing"]

CACHE = Path("/var/tmp/hpcjup-registry")
PORT = 5015
MARKER = "/hpcjup-image-marker"
MARKER_TEXT = "hpcjup test image: only the container has this file"
REPO, TAG = "hpcjup/test", "1"
CA_FILE = Path("/usr/local/share/ca-certificates/hpcjup-test-registry.crt")
MOUNT_POINTS = ("opt/hpcjup-cluster-env", "home/hpcuser", "home/hpcneighbour")


def missing() -> str | None:
    """Why the registry cannot run here, or None."""
    if os.geteuid() != 0:
        return "the test registry needs root (its certificate goes into the machine's trust store)"
    absent = [b for b in ("docker-registry", "debootstrap", "podman", "openssl", "ch-image") if not shutil.which(b)]
    return f"missing {', '.join(absent)} (run tests/cluster/install.sh as root)" if absent else None


class Registry:
    """distribution 2.8 on 127.0.0.1:PORT with TLS, the test image pushed to it; stopped by pid on exit."""

    def __init__(self, port: int = PORT) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ref(self) -> str:
        return f"docker://localhost:{self.port}/{REPO}:{TAG}"

    def __enter__(self) -> Registry:
        CACHE.mkdir(mode=0o700, exist_ok=True)
        self._certificate()
        config = CACHE / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {CACHE / 'data'}\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n"
            f"  tls:\n    certificate: {CACHE / 'cert.pem'}\n    key: {CACHE / 'key.pem'}\n"
        )
        log = open(CACHE / "registry.log", "ab")  # the registry's own log (it keeps its copy)
        self.proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 30
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"the test registry did not start: see {CACHE / 'registry.log'}")
            time.sleep(0.1)
        if not self._has_image():
            self._push()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def push_tag(self, tag: str, mark: str) -> str:
        """Push the test image under TAG with its label `hpcjup.mark` set to MARK: a new config, so a new manifest
        digest, over the same layer (nothing new to upload; about a second). Another MARK moves the tag. The ref."""
        base, local = f"localhost:{self.port}/{REPO}:{TAG}", f"localhost:{self.port}/{REPO}:{tag}"
        if subprocess.run(["podman", "image", "exists", base]).returncode != 0:
            subprocess.run(["podman", "pull", "-q", base], check=True, capture_output=True)
        with tempfile.TemporaryDirectory() as context:
            containerfile = f"FROM {base}\nLABEL hpcjup.mark={mark}\n"
            argv = ["podman", "build", "-q", "--pull=never", "-t", local, "-f", "-", context]
            subprocess.run(argv, input=containerfile.encode(), check=True, capture_output=True)
        subprocess.run(["podman", "push", "-q", local], check=True, capture_output=True)
        return f"docker://{local}"

    def digest(self, tag: str) -> str:
        """The registry's manifest digest of TAG now."""
        url = f"https://localhost:{self.port}/v2/{REPO}/manifests/{tag}"
        request = urllib.request.Request(url, method="HEAD")
        kinds = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
        request.add_header("Accept", ", ".join(kinds))  # one header: urllib keeps only the last of a name
        with urllib.request.urlopen(request, timeout=10, context=self._context()) as answer:
            return str(answer.headers["Docker-Content-Digest"])

    def _certificate(self) -> None:
        """A self-signed certificate for localhost, trusted machine-wide (made once)."""
        cert, key = CACHE / "cert.pem", CACHE / "key.pem"
        if not cert.exists():
            subprocess.run(
                [
                    *(
                        "openssl",
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-days",
                        "3650",
                        "-subj",
                        "/CN=localhost",
                    ),
                    *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
                ],
                check=True,
                capture_output=True,
            )
        if not CA_FILE.exists() or CA_FILE.read_bytes() != cert.read_bytes():
            shutil.copyfile(cert, CA_FILE)
            subprocess.run(["update-ca-certificates"], check=True, capture_output=True)

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(CACHE / "cert.pem"))

    def _answers(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True
        return False

    def _has_image(self) -> bool:
        url = f"https://localhost:{self.port}/v2/{REPO}/manifests/{TAG}"
        request = urllib.request.Request(url, method="HEAD")
        request.add_header("Accept", "application/vnd.oci.image.manifest.v1+json")
        request.add_header("Accept", "application/vnd.docker.distribution.manifest.v2+json")
        try:
            with urllib.request.urlopen(request, timeout=10, context=self._context()) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def _push(self) -> None:
        """Build the rootfs (cached), import it into Podman and push it."""
        tar = _rootfs_tar()
        local = f"localhost:{self.port}/{REPO}:{TAG}"
        subprocess.run(["podman", "import", str(tar), local], check=True, capture_output=True)
        subprocess.run(["podman", "push", local], check=True, capture_output=True)


def _rootfs_tar() -> Path:
    """The test image's root filesystem as a tar (debootstrap once per machine)."""
    tar = CACHE / "rootfs.tar"
    if tar.exists():
        return tar
    rootfs = CACHE / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3",
            "bookworm",
            str(rootfs),
            "http://deb.debian.org/debian",
        ],
        check=True,
        capture_output=True,
    )
    for waste in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale"):
        shutil.rmtree(rootfs / waste, ignore_errors=True)
    for point in MOUNT_POINTS:
        (rootfs / point).mkdir(parents=True, exist_ok=True)
    (rootfs / MARKER.lstrip("/")).write_text(MARKER_TEXT + "\n")
    partial = tar.with_suffix(".part")
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
    partial.rename(tar)
    shutil.rmtree(rootfs)
    return tar
