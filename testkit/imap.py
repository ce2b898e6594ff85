"""A real IMAP server for the tests: Debian's dovecot, throw-away, on a free loopback port.

``start_dovecot()`` writes its own configuration in a fresh temporary folder (the system's
/etc/dovecot is never read), with imaps only (a self-signed certificate, see tls.py), one
passwd-file user and a Maildir, and starts ``dovecot -F`` in the foreground; ``stop()`` ends it
and removes the folder.

Dovecot refuses to run its login processes, or a mailbox, as root. As root (CI, this machine) the
login processes run as Debian's ``dovenull`` user, the internal ones as ``dovecot`` and the
mailbox as ``dovecot`` too: the folder is then made traversable and the Maildir owned by that
user. As any other user, everything runs as that user (dovecot's non-root mode: no chroot).
The folder is made with ``tempfile.mkdtemp`` under /tmp rather than pytest's tmp_path, which is
private to root (mode 700) and whose long names would overflow the 108-byte unix socket paths.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from imapclient import IMAPClient

from testkit.net import free_port, wait_for_port
from testkit.tls import self_signed

DOVECOT = "/usr/sbin/dovecot"
USER, PASSWORD = "bounces", "imap-pw-0123"
HANDLED = b"$NewsletterHandled"


def dovecot_available() -> bool:
    return Path(DOVECOT).exists()


@dataclass
class Dovecot:
    port: int
    folder: Path
    cert: Path  # the CA file a client must trust
    process: subprocess.Popen[bytes] = field(repr=False)
    user: str = USER
    password: str = PASSWORD

    def url(self, folder: str = "INBOX") -> str:
        return f"imaps://{self.user}@127.0.0.1:{self.port}/{folder}"

    def client(self) -> IMAPClient:
        context = ssl.create_default_context(cafile=str(self.cert))
        client = IMAPClient("127.0.0.1", port=self.port, ssl=True, ssl_context=context, timeout=10)
        client.login(self.user, self.password)
        return client

    def append(self, raw: bytes, folder: str = "INBOX", flags: tuple[bytes, ...] = ()) -> int:
        """APPEND ``raw`` to ``folder`` (created if missing); its UID."""
        with self.client() as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            reply = client.append(folder, raw, flags=flags)
        # "[APPENDUID <validity> <uid>] Append completed."
        return int(reply.split(b"]")[0].split()[-1])

    def flags(self, folder: str = "INBOX") -> dict[int, set[bytes]]:
        """Every message's flags in ``folder``, by UID (read with EXAMINE: nothing changes)."""
        with self.client() as client:
            client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])
            fetched = client.fetch(uids, ["FLAGS"]) if uids else {}
        return {uid: set(data[b"FLAGS"]) - {b"\\Recent"} for uid, data in fetched.items()}

    def folders(self) -> list[str]:
        with self.client() as client:
            return sorted(name for _flags, _delim, name in client.list_folders())

    def clear(self, folder: str = "INBOX") -> None:
        """Empty ``folder`` between tests (the one place that expunges: the code under test never)."""
        with self.client() as client:
            client.select_folder(folder)
            uids = client.search(["ALL"])
            if uids:
                client.delete_messages(uids)
                client.expunge()

    def log(self) -> str:
        path = self.folder / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def _accounts() -> tuple[str, str, str, int, int]:
    """(login user, internal user and group, mailbox uid and gid) as dovecot will accept them."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return me.pw_name, me.pw_name, _group_name(me.pw_gid), me.pw_uid, me.pw_gid
    mail = pwd.getpwnam("dovecot")  # created by the dovecot-core package
    return "dovenull", "dovecot", _group_name(mail.pw_gid), mail.pw_uid, mail.pw_gid


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name


def start_dovecot(*, extra_config: str = "") -> Dovecot:
    """A dovecot listening (imaps) on a free loopback port once this returns."""
    folder = Path(tempfile.mkdtemp(prefix="nl-dovecot-"))
    try:
        return _start(folder, extra_config)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _start(folder: Path, extra_config: str) -> Dovecot:
    login_user, internal_user, internal_group, uid, gid = _accounts()
    folder.chmod(0o755)  # the mailbox and auth processes run as another user when we are root
    cert, key = self_signed(folder)
    key.chmod(0o600)  # read by the master process (root, or us) only
    mail = folder / "mail"
    mail.mkdir()
    if os.geteuid() == 0:
        os.chown(mail, uid, gid)
    passwd = folder / "passwd"
    passwd.write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    passwd.chmod(0o644)
    port = free_port()
    config = folder / "dovecot.conf"
    config.write_text(
        f"""\
base_dir = {folder}/run
state_dir = {folder}/state
instance_name = nl-{port}
log_path = {folder}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:{mail}/%u
auth_mechanisms = plain login
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mail}/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
{extra_config}
"""
    )
    process = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "stderr.log").open("wb"),
    )
    server = Dovecot(port, folder, cert, process)
    try:
        wait_for_port(port, timeout=15)
        _wait_for_login(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_for_login(server: Dovecot, timeout: float = 15.0) -> None:
    """The port listens before the login processes are ready: wait for a first login."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with server.client():
                return
        except Exception:
            if time.monotonic() > deadline or server.process.poll() is not None:
                raise
            with contextlib.suppress(Exception):
                time.sleep(0.1)
