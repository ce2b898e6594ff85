"""Send throughput, side by side in one run, against Postfix's reference tools.

    .venv/bin/python bench/bench_send.py [--subscribers 20000] [--big 200000] [--naive 300]

Needs Debian's postfix package (smtp-sink, smtp-source). Prints, from one run:
- `newsletter send` of the sample edition to N subscribers over 4 connections into `smtp-sink`;
- the same send with DKIM signing on (an RSA 2048 key made for the run), and its ratio to the
  unsigned one (issue 12: signing keeps at least half the rate), in rate and in CPU seconds of
  the send process (the CPU ratio moves less with whatever else the machine runs);
- the same send with click and open tracking on (issue 15: each message signs a click token per
  article and carries the open pixel), and what it costs per message in CPU;
- `smtp-source -d -s 4` (the C reference: 4 reused sessions, same message size, same count);
- a naive loop (render + premailer + EmailMessage + send per subscriber, one connection);
- peak RSS of the send process for N and for the big list (flat memory check);
- a slow relay (`smtp-sink -w 1`: 1 s before each DATA reply) with 50 connections, 1,000
  subscribers, against the ideal 50 msg/s.
Every run counts what arrived at the relay (smtp-sink -c). Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from datetime import date
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit.net import free_port, wait_for_port  # noqa: E402

SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
DAY = "2026-01-27"


class Sink:
    """smtp-sink on a free port, counting messages (-c)."""

    def __init__(self, *extra: str) -> None:
        self.port = free_port()
        self.out = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the sink process
        self.proc = subprocess.Popen(
            [SINK, "-c", "-u", "nobody", *extra, f"127.0.0.1:{self.port}", "1024"],
            stdout=self.out,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, timeout=5)

    def count(self) -> int:
        time.sleep(0.3)
        self.out.seek(0)
        found = re.findall(rb"mesg=(\d+)", self.out.read())
        return int(found[-1]) if found else 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.out.close()


def run_measured(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, int, float]:
    """Wall seconds, peak RSS in MB (this child, from wait4), exit status and CPU seconds."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        sys.stderr.write(proc.stderr.read().decode() if proc.stderr else "")
    return elapsed, usage.ru_maxrss // 1024, proc.returncode, usage.ru_utime + usage.ru_stime


def make_env(workdir: Path, port: int, connections: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=f"sqlite:///{workdir / 'bench.db'}",
        NEWSLETTER_SMTP_HOST="127.0.0.1",
        NEWSLETTER_SMTP_PORT=str(port),
        NEWSLETTER_SMTP_SECURITY="none",
        NEWSLETTER_SMTP_CONNECTIONS=str(connections),
        NEWSLETTER_FROM="L’Observateur africain <lettre@exemple.ma>",
        NEWSLETTER_BASE_URL="https://lettre.exemple.ma",
        NEWSLETTER_SECRET_KEY="bench-secret-key-0123456789abcdef",
        # The bundled sample, named: send refuses an empty NEWSLETTER_SOURCES.
        NEWSLETTER_SOURCES=str(ROOT / "newsletter" / "sample" / "feed.xml"),
    )
    return env


def prepare_list(workdir: Path, count: int) -> None:
    csv = workdir / "subscribers.csv"
    with csv.open("w", encoding="utf-8") as out:
        out.write("email,name\n")
        for i in range(count):
            out.write(f"lecteur{i}@exemple{i % 97}.ma,Lecteur {i}\n")
    env = make_env(workdir, 25, 1)
    subprocess.run(
        [sys.executable, "-m", "newsletter", "subscribers", "import", str(csv)],
        env=env,
        cwd=workdir,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def dkim_settings(workdir: Path) -> dict[str, str]:
    """An RSA 2048 key in a PEM file and the settings that sign with it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = workdir / "dkim.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return {"NEWSLETTER_DKIM_SELECTOR": "bench", "NEWSLETTER_DKIM_PRIVATE_KEY": str(pem)}


TRACKED = {"NEWSLETTER_TRACK_CLICKS": "true", "NEWSLETTER_TRACK_OPENS": "true"}


def our_send(
    count: int,
    connections: int,
    *sink_args: str,
    dkim: bool = False,
    extra: dict[str, str] | None = None,
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        prepare_list(workdir, count)
        sink = Sink(*sink_args)
        try:
            env = make_env(workdir, sink.port, connections)
            if dkim:
                env.update(dkim_settings(workdir))
            env.update(extra or {})
            cmd = [sys.executable, "-m", "newsletter", "send", "--date", DAY]
            elapsed, rss, code, cpu = run_measured(cmd, env, workdir)
            arrived = sink.count()
        finally:
            sink.stop()
    return {
        "seconds": elapsed,
        "rate": arrived / elapsed,
        "rss_mb": rss,
        "cpu": cpu,
        "arrived": arrived,
        "exit": code,
    }


def message_size() -> int:
    """Bytes of one real message of the sample edition, as sent."""
    with tempfile.TemporaryDirectory() as tmp:
        env = make_env(Path(tmp), 25, 1)
        subprocess.run(
            [sys.executable, "-m", "newsletter", "preview", "--date", DAY, "--out", tmp],
            env=env,
            cwd=tmp,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return (Path(tmp) / "digest.eml").stat().st_size


def smtp_source(count: int, size: int, sessions: int = 4) -> dict[str, float]:
    sink = Sink()
    try:
        started = time.perf_counter()
        subprocess.run(
            [
                SOURCE,
                "-d",
                "-s",
                str(sessions),
                "-m",
                str(count),
                "-l",
                str(size),
                f"127.0.0.1:{sink.port}",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        elapsed = time.perf_counter() - started
        arrived = sink.count()
    finally:
        sink.stop()
    return {"seconds": elapsed, "rate": arrived / elapsed, "arrived": arrived}


def naive_loop(count: int) -> dict[str, float]:
    """What a per-subscriber pipeline costs: render, inline, build, send; one connection."""
    from newsletter.adapters.render import Renderer
    from newsletter.config import load_settings
    from newsletter.services.compose import compose_edition

    settings = load_settings(environ={})
    edition = compose_edition(settings, date.fromisoformat(DAY))
    sink = Sink()
    try:
        client = smtplib.SMTP("127.0.0.1", sink.port)
        started = time.perf_counter()
        for i in range(count):
            variant = Renderer(title=settings.title, locale=settings.locale).render(edition)
            msg = EmailMessage()
            msg["From"] = "L’Observateur africain <lettre@exemple.ma>"
            msg["To"] = f"lecteur{i}@exemple.ma"
            msg["Subject"] = variant.subject
            msg.set_content(variant.text)
            msg.add_alternative(variant.html, subtype="html")
            client.send_message(msg)
        elapsed = time.perf_counter() - started
        client.quit()
        arrived = sink.count()
    finally:
        sink.stop()
    return {"seconds": elapsed, "rate": arrived / elapsed, "arrived": arrived}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--big", type=int, default=200_000, help="0 to skip the flat-memory run")
    parser.add_argument("--naive", type=int, default=300)
    parser.add_argument("--slow", type=int, default=1_000, help="0 to skip the slow-relay run")
    parser.add_argument(
        "--no-track", action="store_true", help="skip the run with click and open tracking on"
    )
    args = parser.parse_args()
    if not (Path(SINK).exists() and Path(SOURCE).exists()):
        sys.exit(
            "bench needs Debian's postfix package (smtp-sink, smtp-source): apt-get install postfix"
        )

    size = message_size()
    print(f"message size of the sample edition: {size:,} bytes")
    ours = our_send(args.subscribers, 4)
    signed = our_send(args.subscribers, 4, dkim=True)
    tracked = None if args.no_track else our_send(args.subscribers, 4, extra=TRACKED)
    ref = smtp_source(args.subscribers, size)
    naive = naive_loop(args.naive)
    print(
        f"newsletter send, {args.subscribers:,} subscribers, 4 connections: "
        f"{ours['rate']:,.0f} msg/s ({ours['seconds']:.1f} s, {ours['arrived']:,} arrived, "
        f"peak RSS {ours['rss_mb']} MB, exit {ours['exit']})"
    )
    print(
        f"newsletter send, same, DKIM-signed (RSA 2048): {signed['rate']:,.0f} msg/s "
        f"({signed['seconds']:.1f} s, {signed['arrived']:,} arrived, exit {signed['exit']})"
    )
    print(
        f"CPU of the send process, unsigned / signed: {ours['cpu']:.1f} s / {signed['cpu']:.1f} s"
        f" ({(signed['cpu'] - ours['cpu']) / max(signed['arrived'], 1) * 1000:.2f} ms more a"
        " message)"
    )
    if tracked is not None:
        print(
            f"newsletter send, same, clicks and opens tracked: {tracked['rate']:,.0f} msg/s "
            f"({tracked['seconds']:.1f} s, {tracked['arrived']:,} arrived, exit {tracked['exit']});"
            f" ratio tracked/untracked {tracked['rate'] / ours['rate']:.2f} in rate, CPU "
            f"{tracked['cpu']:.1f} s ({(tracked['cpu'] - ours['cpu']) / max(tracked['arrived'], 1) * 1000:.2f}"
            " ms more a message)"
        )
    print(
        f"smtp-source -d -s 4, same count and size:      {ref['rate']:,.0f} msg/s ({ref['arrived']:,} arrived)"
    )
    print(
        f"naive loop (render+premailer+EmailMessage), {args.naive} msgs: {naive['rate']:,.0f} msg/s"
    )
    print(f"ratio to smtp-source: {ours['rate'] / ref['rate']:.2f}  (target >= 0.25)")
    print(f"ratio to naive loop:  {ours['rate'] / naive['rate']:.1f}x (target >= 8)")
    print(
        f"ratio signed/unsigned: {signed['rate'] / ours['rate']:.2f} in rate,"
        f" {ours['cpu'] / signed['cpu']:.2f} in CPU  (target >= 0.5)"
    )
    if args.big:
        big = our_send(args.big, 4)
        print(
            f"newsletter send, {args.big:,} subscribers: {big['rate']:,.0f} msg/s, "
            f"{big['arrived']:,} arrived, peak RSS {big['rss_mb']} MB "
            f"(x{big['rss_mb'] / ours['rss_mb']:.2f} of the {args.subscribers:,} run)"
        )
    if args.slow:
        slow = our_send(args.slow, 50, "-w", "1")
        print(
            f"slow relay (smtp-sink -w 1), 50 connections, {args.slow:,} subscribers: "
            f"{slow['rate']:.1f} msg/s, {slow['arrived']:,} arrived; ratio to ideal 50 msg/s: "
            f"{slow['rate'] / 50:.2f} (target >= 0.8)"
        )


if __name__ == "__main__":
    main()
