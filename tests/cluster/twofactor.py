"""A login node with real TOTP two-factor authentication: key first, then a "Verification code".

OpenSSH 9.2 has no PAMServiceName: the PAM service is the sshd binary's name, so this sshd runs
through a symlink, /usr/local/sbin/sshd2fa, with /etc/pam.d/sshd2fa using pam_google_authenticator.
The cluster user's ~/.google_authenticator (0400) holds a fixed test secret; `code()` is what an
authenticator app would show (oathtool). See /work/shared/TESTING.md.
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
from pathlib import Path

from tests.cluster.bastion import ExtraSshd

SSHD2FA = Path("/usr/local/sbin/sshd2fa")
PAM_SERVICE = Path("/etc/pam.d/sshd2fa")
PAM_CONFIG = (
    "auth required pam_google_authenticator.so\naccount required pam_permit.so\nsession required pam_permit.so\n"
)
SECRET = "HPCJUPTESTTOTPSECRETKEYFORSSHDAA"  # base32; fixed, so concurrent test runs write the same file
PROMPT = "Verification code"


def missing_requirements() -> str | None:
    """Why a 2FA sshd cannot run here, or None."""
    if not Path("/lib/x86_64-linux-gnu/security/pam_google_authenticator.so").exists() and not list(
        Path("/lib").glob("*/security/pam_google_authenticator.so")
    ):
        return "libpam-google-authenticator is not installed"
    if subprocess.run(["which", "oathtool"], capture_output=True).returncode != 0:
        return "oathtool is not installed"
    return None


class TwoFactorSshd(ExtraSshd):
    """sshd with `AuthenticationMethods publickey,keyboard-interactive` and a TOTP PAM module."""

    name = "sshd2fa"
    program = str(SSHD2FA)

    def extra_config(self) -> str:
        return "UsePAM yes\nKbdInteractiveAuthentication yes\nAuthenticationMethods publickey,keyboard-interactive\n"

    def start(self) -> TwoFactorSshd:
        """Set up the symlink, the PAM service and the user's secret, then start."""
        if not SSHD2FA.is_symlink():
            SSHD2FA.unlink(missing_ok=True)
            SSHD2FA.symlink_to("/usr/sbin/sshd")
        if not PAM_SERVICE.exists() or PAM_SERVICE.read_text() != PAM_CONFIG:
            PAM_SERVICE.write_text(PAM_CONFIG)
        entry = pwd.getpwnam(self.cluster.user)
        secret = Path(entry.pw_dir) / ".google_authenticator"
        content = f'{SECRET}\n" TOTP_AUTH\n'
        if not secret.exists() or secret.read_text() != content:
            secret.unlink(missing_ok=True)
            secret.write_text(content)
        os.chown(secret, entry.pw_uid, entry.pw_gid)
        os.chmod(secret, 0o400)  # the module refuses a secret others can read
        super().start()
        return self

    @staticmethod
    def code() -> str:
        """The current TOTP code."""
        return subprocess.run(
            ["oathtool", "--totp", "-b", "-"], input=SECRET, capture_output=True, text=True, check=True
        ).stdout.strip()

    def write_askpass(self, path: Path, asked: Path) -> Path:
        """An askpass program that records each prompt in `asked` and answers with the current code."""
        path.write_text(
            "#!/bin/sh\n"
            f'printf "%s\\n" "$1" >> {shlex.quote(str(asked))}\n'
            f"printf %s {shlex.quote(SECRET)} | exec oathtool --totp -b -\n"
        )
        os.chmod(path, 0o700)
        return path

    def logins(self) -> int:
        """How many logins passed both factors."""
        return self.log().count("Accepted keyboard-interactive/pam")
