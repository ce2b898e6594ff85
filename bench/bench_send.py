"""Send speed (issue 16): every figure next to its reference from the same run, ratio, target, verdict.

    .venv/bin/python bench/bench_send.py                 # everything, full sizes (~30 min: 1M send)
    .venv/bin/python bench/bench_send.py --million 0     # everything but the million (~5 min)
    .venv/bin/python bench/bench_send.py --only million  # the million (and the 20k run it compares to)
    .venv/bin/python bench/bench_send.py --quick         # every part at small sizes: does it work?

Needs Debian's postfix package (smtp-sink, smtp-source); the PostgreSQL part also needs the server
binaries (initdb, pg_ctl) and psycopg (the `test` or `postgres` extra), else it says it skipped.
Every send is the real CLI (`python -m newsletter send`) in a subprocess, timed wall-clock from
just before the command starts to its exit, and counted at the relay (smtp-sink -c). Parts:
1. send: N subscribers (20,000), 4 connections into smtp-sink, against `smtp-source -d -s 4`
   (C; 4 reused sessions, same count, same message size) into the same kind of sink: >= 0.5.
   The ledger is read back (`newsletter status`): every recipient must show sent.
2. naive: a render + premailer + EmailMessage + send loop per subscriber, one connection: >= 15x.
3. memory: the send's whole process tree (the process and every descendant) sampled from /proc
   every 50 ms (testkit/proctree.py): peak of the sum of RSS and peak of the sum of PSS (PSS
   counts a page shared between forked processes once). The target (<= 100 MB) reads the PSS sum
   when the send forked, else the RSS sum; ru_maxrss (largest single process, wait4) is printed.
   A sample costs ~1.5 ms of this process's CPU (a /proc walk): ~3 % of one core.
4. dkim: the same send DKIM-signed (RSA 2048 key made for the run): rate ratio >= 0.5; the CPU
   ratio (CPU seconds of the send and its reaped children) is printed beside it.
5. track: the same send with click and open tracking on (informational, issue 15).
6. slow: `smtp-sink -w 1` (1 s before each DATA reply), 50 connections, 1,000 subscribers, wall
   clock from the command's start, against the ideal 50 msg/s: >= 0.95. `smtp-source -d -s 50`
   on the same kind of relay is printed beside it: what the relay allows with no start-up.
7. big: an extra flat-memory point (--big N, off by default: the million is the issue's).
8. million: import 1,000,000 subscribers (< 60 s), send them (< 15 min wall), memory at 1M
   against the 20k run (flat: <= 1.10x, and <= 100 MB), `newsletter status` run again and again
   during the send, 2 s apart, each timed whole (max < 1 s; the median and the same command on
   the idle database after the send printed).
9. postgres: a throwaway cluster; one `send` (4 connections) on 20,000 subscribers, then on a
   fresh database two `send` processes at once on the same edition (4 connections each): combined
   rate (arrived / first start to last end) > one sender's, and zero duplicates: the sink logs
   every RCPT (smtp-sink -v), each subscriber must arrive exactly once, the sink's count must be
   exactly the subscriber count, and the ledger must show every one sent. The cluster runs with
   fsync on (PostgreSQL's default, as a real server; tests/test_postgres.py turns it off);
   --pg-fsync off for the tests' setting.
Each part prints as it ends (result, reference, ratio, target, PASS/FAIL), with the time and the
load average. The run ends with the PASS/FAIL list and a Markdown table in the README's figures
format (benchmark | result | reference, the ratio and verdict in the last column). The exit
status is 0 whatever the verdicts: figures, not a test.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit.net import free_port, wait_for_port  # noqa: E402
from testkit.postgres import (  # noqa: E402
    create_database,
    server_binaries_installed,
    throwaway_postgres,
)
from testkit.proctree import MB, TreeMemory  # noqa: E402

SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
DAY = "2026-01-27"
CLI = [sys.executable, "-m", "newsletter"]
SECTIONS = ("send", "naive", "memory", "dkim", "track", "slow", "big", "million", "postgres")
# The runs that compare against the base N-subscriber send, which then runs too.
NEEDS_BASE = {"send", "naive", "memory", "dkim", "track", "big", "million"}
FULL = {"subscribers": 20_000, "naive": 300, "slow": 1_000, "big": 0, "million": 1_000_000}
QUICK = {"subscribers": 2_000, "naive": 100, "slow": 200, "big": 0, "million": 20_000}
MEMORY_TARGET_MB = 100
FLAT_TARGET = 1.10  # this bench's reading of "flat": at most 10 % more at 1M than at 20k
STATUS_EVERY = 2.0


# --- the relay -------------------------------------------------------------------------------


class Sink:
    """smtp-sink on a free port, counting messages (-c); with verbose, logging every RCPT (-v)."""

    def __init__(self, *extra: str, verbose: bool = False) -> None:
        self.port = free_port()
        self.out = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the sink process
        # As root, smtp-sink drops to nobody (-u); as another user it runs as that user.
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        flags = ["-c", *(["-v"] if verbose else []), *user, *extra]
        self.proc = subprocess.Popen(
            [SINK, *flags, f"127.0.0.1:{self.port}", "1024"],
            stdout=self.out,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, timeout=5)

    def count(self) -> int:
        """Messages taken: the last `mesg=N` counter smtp-sink printed (-c)."""
        time.sleep(0.3)  # the counter line of the last session's end
        # Only the tail: at a million messages the counter lines alone are ~25 MB.
        size = self.out.seek(0, os.SEEK_END)
        self.out.seek(max(0, size - 65_536))
        found = re.findall(rb"mesg=(\d+)", self.out.read())
        return int(found[-1]) if found else 0

    def recipients(self) -> Counter[bytes]:
        """How many times each recipient was given (verbose sinks only)."""
        self.out.seek(0)
        return Counter(re.findall(rb"(?i)rcpt to:\s*<([^>]*)>", self.out.read()))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.out.close()


@contextmanager
def sink(*extra: str, verbose: bool = False) -> Iterator[Sink]:
    relay = Sink(*extra, verbose=verbose)
    try:
        yield relay
    finally:
        relay.stop()


# --- the command under measure ---------------------------------------------------------------


def make_env(
    workdir: Path,
    port: int,
    connections: int,
    database_url: str | None = None,
    processes: int = 1,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_SEND_PROCESSES=str(processes),
        NEWSLETTER_DATABASE_URL=database_url or f"sqlite:///{workdir / 'bench.db'}",
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


@dataclass
class Run:
    """One or more processes started together and measured until the last one ends."""

    seconds: float  # from just before the first start to the last exit
    exits: list[int]
    cpu: float  # user + system seconds of the processes and the children they reaped
    ru_maxrss_mb: float  # the largest single process (wait4), not a sum
    memory: TreeMemory
    output: str
    arrived: int = 0
    ledger_sent: int = -1
    ledger_total: int = -1
    stopped: bool = False  # SIGTERM at the time limit

    @property
    def rate(self) -> float:
        return self.arrived / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        return all(code == 0 for code in self.exits)

    def memory_text(self) -> str:
        m = self.memory
        return (
            f"peak RSS sum {m.peak_rss / MB:.0f} MB, peak PSS sum {m.peak_pss / MB:.0f} MB over "
            f"up to {m.max_processes} process(es) ({m.samples} samples), "
            f"ru_maxrss {self.ru_maxrss_mb:.0f} MB"
        )


def run_processes(
    cmds: list[list[str]],
    env: dict[str, str],
    cwd: Path,
    during: Callable[[], Callable[[], None]] | None = None,
    limit: float | None = None,
) -> Run:
    """Start ``cmds`` together, sample their process trees, wait for all; ``during`` starts
    something beside them and returns what stops it; past ``limit`` seconds each is sent
    SIGTERM and the run is marked stopped."""
    logs: list[IO[bytes]] = [tempfile.TemporaryFile() for _ in cmds]  # noqa: SIM115
    started = time.perf_counter()
    # Output to files, not pipes: a progress bar must never block on a pipe nobody reads.
    procs = [
        subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        for cmd, log in zip(cmds, logs, strict=True)
    ]
    memory = TreeMemory([p.pid for p in procs]).start()
    stop_beside = during() if during else None
    running = {p.pid for p in procs}
    lock = threading.Lock()
    stopped: list[bool] = []

    def stop_all() -> None:
        with lock:  # only pids not reaped yet: a reaped pid may already be someone else's
            for pid in running:
                os.kill(pid, signal.SIGTERM)
            stopped.append(True)

    timer = threading.Timer(limit, stop_all) if limit else None
    if timer:
        timer.start()
    exits: list[int] = []
    cpu = 0.0
    maxrss = 0
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        with lock:
            running.discard(proc.pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
        exits.append(proc.returncode)
        cpu += usage.ru_utime + usage.ru_stime
        maxrss = max(maxrss, usage.ru_maxrss)
    elapsed = time.perf_counter() - started
    if timer:
        timer.cancel()
    memory.stop()
    if stop_beside:
        stop_beside()
    output = ""
    for log in logs:
        log.seek(0)
        output += log.read().decode(errors="replace")
        log.close()
    return Run(elapsed, exits, cpu, maxrss / 1024, memory, output, stopped=bool(stopped))


def send_cmd() -> list[str]:
    return [*CLI, "send", "--date", DAY]


def ledger(env: dict[str, str], cwd: Path) -> tuple[int, int]:
    """(sent, recipients) of the edition, as `newsletter status` prints them."""
    out = subprocess.run(
        [*CLI, "status", "--date", DAY], env=env, cwd=cwd, capture_output=True, text=True
    ).stdout
    sent = re.search(r"^\s+(\d+) sent,", out, re.MULTILINE)
    total = re.search(r"(\d+) recipients", out)
    return (int(sent[1]) if sent else -1, int(total[1]) if total else -1)


def write_list(workdir: Path, count: int) -> Path:
    csv = workdir / "subscribers.csv"
    with csv.open("w", encoding="utf-8") as out:
        out.write("email,name\n")
        for i in range(count):
            out.write(f"lecteur{i}@exemple{i % 97}.ma,Lecteur {i}\n")
    return csv


def import_list(workdir: Path, count: int, env: dict[str, str]) -> tuple[float, int]:
    """Write the list, then import it through the CLI: (seconds of the import alone, exit)."""
    csv = write_list(workdir, count)
    started = time.perf_counter()
    code = subprocess.run(
        [*CLI, "subscribers", "import", str(csv)],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ).returncode
    return time.perf_counter() - started, code


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
    processes: int = 1,
) -> Run:
    """Import ``count`` subscribers into a fresh SQLite file, then measure one send
    (NEWSLETTER_SEND_PROCESSES=``processes``)."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        _, code = import_list(workdir, count, make_env(workdir, 25, 1))
        if code != 0:
            sys.exit(f"the import of {count:,} subscribers failed (exit {code})")
        with sink(*sink_args) as relay:
            env = make_env(workdir, relay.port, connections, processes=processes)
            if dkim:
                env.update(dkim_settings(workdir))
            env.update(extra or {})
            run = run_processes([send_cmd()], env, workdir)
            run.arrived = relay.count()
        run.ledger_sent, run.ledger_total = ledger(env, workdir)
    complain_if_failed(run)
    return run


def complain_if_failed(run: Run) -> None:
    if not run.ok:
        print(f"   ! send exit status {run.exits}; its output ends:", flush=True)
        for line in run.output.strip().splitlines()[-5:]:
            print(f"   ! {line}", flush=True)


def message_size() -> int:
    """Bytes of one real message of the sample edition, as sent."""
    with tempfile.TemporaryDirectory() as tmp:
        env = make_env(Path(tmp), 25, 1)
        subprocess.run(
            [*CLI, "preview", "--date", DAY, "--out", tmp],
            env=env,
            cwd=tmp,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return (Path(tmp) / "digest.eml").stat().st_size


def smtp_source(
    count: int, size: int, sessions: int = 4, sink_args: tuple[str, ...] = ()
) -> tuple[float, int]:
    """(rate, arrived) of Postfix's C client, wall clock from its start."""
    with sink(*sink_args) as relay:
        started = time.perf_counter()
        flags = ["-d", "-s", str(sessions), "-m", str(count), "-l", str(size)]
        subprocess.run(
            [SOURCE, *flags, f"127.0.0.1:{relay.port}"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        elapsed = time.perf_counter() - started
        arrived = relay.count()
    return arrived / elapsed, arrived


def naive_loop(count: int) -> float:
    """Rate of a per-subscriber pipeline: render, inline, build, send; one connection."""
    from newsletter.adapters.render import Renderer
    from newsletter.config import load_settings
    from newsletter.services.compose import compose_edition

    settings = load_settings(environ={})
    edition = compose_edition(settings, date.fromisoformat(DAY))
    with sink() as relay:
        client = smtplib.SMTP("127.0.0.1", relay.port)
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
        arrived = relay.count()
    return arrived / elapsed


class StatusPoller:
    """Runs `newsletter status` with ``every`` seconds between runs; times each whole command
    (start-up and imports included: what an operator waits for)."""

    def __init__(self, env: dict[str, str], cwd: Path, every: float = STATUS_EVERY) -> None:
        self.env, self.cwd, self.every = env, cwd, every
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-poller", daemon=True)

    def start(self) -> Callable[[], None]:
        self._thread.start()

        def stop() -> None:
            self._stop.set()
            self._thread.join()

        return stop

    def once(self) -> float:
        started = time.perf_counter()
        code = subprocess.run(
            [*CLI, "status", "--date", DAY], env=self.env, cwd=self.cwd, capture_output=True
        ).returncode
        if code != 0:
            self.failures += 1
        return time.perf_counter() - started

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.latencies.append(self.once())


# --- what the run prints ---------------------------------------------------------------------


def rate_text(rate: float) -> str:
    return f"{rate:,.0f} msg/s" if rate >= 100 else f"{rate:,.1f} msg/s"


def run_text(run: Run, count: int) -> str:
    ledger_text = f"ledger {run.ledger_sent:,} of {run.ledger_total:,} sent"
    return (
        f"{rate_text(run.rate)} ({run.seconds:.1f} s from the command's start, "
        f"{run.arrived:,} of {count:,} arrived, {ledger_text}, exit {'/'.join(map(str, run.exits))})"
    )


def delivered_whole(run: Run, count: int) -> bool:
    """Every subscriber arrived and the ledger shows every one sent: the guarantees held."""
    return run.ok and run.arrived == count and run.ledger_sent == run.ledger_total == count


@dataclass
class Check:
    benchmark: str
    result: str
    reference: str
    ratio: str
    target: str
    passed: bool | None  # None: a figure without a target (or skipped)


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def check(
        self,
        benchmark: str,
        result: str,
        reference: str,
        ratio: str,
        target: str,
        passed: bool | None,
    ) -> None:
        verdict = {True: "PASS", False: "FAIL", None: "-"}[passed]
        print(f"\n[{benchmark}]", flush=True)
        print(f"   result:    {result}", flush=True)
        if reference:
            print(f"   reference: {reference}", flush=True)
        if target:
            print(f"   measured:  {ratio}; target {target}: {verdict}", flush=True)
        self.checks.append(Check(benchmark, result, reference, ratio, target, passed))

    def summary(self, header: str) -> bool:
        judged = [c for c in self.checks if c.passed is not None]
        print("\n=== targets", flush=True)
        for c in judged:
            word = "PASS" if c.passed else "FAIL"
            print(f"{word}  {c.benchmark}: {c.ratio} (target {c.target})")
        passed = sum(bool(c.passed) for c in judged)
        print(f"{passed} of {len(judged)} targets hold")
        print(f"\n=== Markdown ({header})\n")
        print("| benchmark | result | reference |")
        print("|---|---|---|")
        for c in self.checks:
            verdict = {True: "PASS", False: "FAIL", None: ""}[c.passed]
            judged_text = f"{c.ratio}; target {c.target}: **{verdict}**" if c.target else c.ratio
            reference = "; ".join(t for t in (c.reference, judged_text) if t)
            cells = (f"`bench_send.py`: {c.benchmark}", c.result, reference)
            print("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
        return passed == len(judged)


def ratio_of(value: float, reference: float) -> float:
    return value / reference if reference else 0.0


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def git_text() -> str:
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "newsletter"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{head or '?'}{' + uncommitted newsletter/ changes' if dirty else ''}"


def section(title: str) -> None:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    print(f"\n--- {title} ({stamp} UTC, {load_text()})", flush=True)


# --- the parts -------------------------------------------------------------------------------


def memory_check(report: Report, run: Run, what: str) -> None:
    m = run.memory
    report.check(
        f"peak memory of the send's process tree, {what}",
        f"{m.counted_mb:.0f} MB, the {m.counted_kind} "
        f"({'the send forked: PSS counts shared pages once' if m.forks else 'one process: RSS'}); "
        f"{run.memory_text()}",
        "",
        f"peak {m.counted_kind} {m.counted_mb:.0f} MB",
        f"<= {MEMORY_TARGET_MB} MB",
        m.counted_mb <= MEMORY_TARGET_MB,
    )


def million_part(
    report: Report, count: int, base: Run, base_count: int, limit: float | None, processes: int
) -> None:
    section(f"million: import and send {count:,} subscribers")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        import_seconds, code = import_list(workdir, count, make_env(workdir, 25, 1))
        report.check(
            f"import {count:,} subscribers (`subscribers import`, CSV)",
            f"{import_seconds:.1f} s ({count / import_seconds:,.0f} rows/s, exit {code})",
            "",
            f"import {import_seconds:.1f} s",
            "< 60 s, exit 0",
            import_seconds < 60 and code == 0,
        )
        with sink() as relay:
            env = make_env(workdir, relay.port, 4, processes=processes)
            poller = StatusPoller(env, workdir)
            run = run_processes([send_cmd()], env, workdir, during=poller.start, limit=limit)
            run.arrived = relay.count()
        complain_if_failed(run)
        idle = min(poller.once() for _ in range(3))
        run.ledger_sent, run.ledger_total = ledger(env, workdir)
    stopped = f"; STOPPED by --million-limit after {limit:.0f} s" if run.stopped else ""
    report.check(
        f"send {count:,} subscribers, 4 connections into smtp-sink, {processes} process(es)",
        run_text(run, count) + stopped,
        "",
        f"send {run.seconds / 60:.1f} min",
        "< 15 min, all arrived, ledger all sent",
        run.seconds < 15 * 60 and delivered_whole(run, count),
    )
    memory_check(report, run, f"{count:,} subscribers")
    flat = ratio_of(run.memory.counted_mb, base.memory.counted_mb)
    report.check(
        f"memory from {base_count:,} to {count:,} subscribers",
        f"{run.memory.counted_mb:.0f} MB ({run.memory.counted_kind}) at {count:,}",
        f"{base.memory.counted_mb:.0f} MB ({base.memory.counted_kind}) at {base_count:,}",
        f"x{flat:.2f}",
        f"<= x{FLAT_TARGET:.2f} (flat)",
        flat <= FLAT_TARGET,
    )
    lat = poller.latencies
    if lat:
        report.check(
            f"`newsletter status` during the {count:,} send, a {STATUS_EVERY:.0f} s pause between "
            "runs",
            f"max {max(lat):.2f} s, median {statistics.median(lat):.2f} s over {len(lat)} "
            f"runs ({poller.failures} failed)",
            f"the same command after the send (idle database): {idle:.2f} s",
            f"max {max(lat):.2f} s",
            "max < 1 s, none failed",
            max(lat) < 1 and poller.failures == 0,
        )
    else:
        report.check(
            "`newsletter status` during the send",
            "none: the send ended first",
            "",
            "",
            "max < 1 s",
            False,
        )


def postgres_part(report: Report, count: int, fsync: bool) -> None:
    section(f"postgres: one sender, then two at once, {count:,} subscribers")
    name = "two `send` processes on one edition, PostgreSQL"
    if not server_binaries_installed():
        print("   skipped: PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        report.check(name, "skipped: initdb/pg_ctl not installed", "", "", "", None)
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        print("   skipped: psycopg is not installed (the `postgres` extra)")
        report.check(name, "skipped: psycopg not installed", "", "", "", None)
        return
    runs: dict[int, Run] = {}
    duplicates: dict[int, tuple[int, int]] = {}  # senders -> (extra copies, never arrived)
    with throwaway_postgres(fsync=fsync) as server:
        for senders in (1, 2):
            database = create_database(server, f"bench_{senders}_senders")
            with tempfile.TemporaryDirectory() as tmp:
                workdir = Path(tmp)
                _, code = import_list(workdir, count, make_env(workdir, 25, 1, database))
                if code != 0:
                    sys.exit(f"the PostgreSQL import failed (exit {code})")
                with sink(verbose=True) as relay:
                    env = make_env(workdir, relay.port, 4, database)
                    run = run_processes([send_cmd()] * senders, env, workdir)
                    run.arrived = relay.count()
                    given = relay.recipients()
                complain_if_failed(run)
                run.ledger_sent, run.ledger_total = ledger(env, workdir)
            extra = sum(n - 1 for n in given.values())
            missing = count - len(given)
            runs[senders], duplicates[senders] = run, (extra, missing)
            print(
                f"   {senders} sender(s): {run_text(run, count)}; {extra} duplicate(s), "
                f"{missing} never given; {run.memory_text()}",
                flush=True,
            )
    one, two = runs[1], runs[2]
    combined = ratio_of(two.rate, one.rate)
    report.check(
        f"two `send` processes at once on one edition, 4 connections each, {count:,} "
        f"subscribers, PostgreSQL (fsync {'on' if fsync else 'off'})",
        f"combined {run_text(two, count)}",
        f"one `send`, same list, fresh database: {run_text(one, count)}",
        f"x{combined:.2f}",
        "> x1.00",
        combined > 1.0,
    )
    extra, missing = duplicates[2]
    report.check(
        "two `send` processes on one edition, PostgreSQL: exactly once",
        f"{extra} duplicate(s), {missing} never given (every RCPT logged by smtp-sink -v); "
        f"{two.arrived:,} arrived, ledger {two.ledger_sent:,} of {two.ledger_total:,} sent",
        f"{count:,} subscribers; one sender: {duplicates[1][0]} duplicate(s), "
        f"{duplicates[1][1]} never given",
        f"{extra} duplicates",
        "0 duplicates, none missed, arrived = ledger sent = subscribers",
        extra == 0 and missing == 0 and delivered_whole(two, count),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"small sizes: {QUICK}")
    parser.add_argument("--subscribers", type=int, help="base send size (20,000)")
    parser.add_argument("--naive", type=int, help="naive-loop messages (300); 0 skips")
    parser.add_argument("--slow", type=int, help="slow-relay subscribers (1,000); 0 skips")
    parser.add_argument("--big", type=int, help="an extra flat-memory send (off); 0 skips")
    parser.add_argument("--million", type=int, help="the million run's size (1,000,000); 0 skips")
    parser.add_argument(
        "--million-limit",
        type=float,
        metavar="SECONDS",
        help="SIGTERM the million send past this (a FAIL anyway past 900 s); default: none",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="NEWSLETTER_SEND_PROCESSES of the 4-connection sends (default 1, the setting's "
        "default); the slow relay and PostgreSQL's senders use one each",
    )
    parser.add_argument("--no-dkim", action="store_true", help="skip the DKIM-signed send")
    parser.add_argument("--no-track", action="store_true", help="skip the tracked send")
    parser.add_argument(
        "--postgres",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the PostgreSQL one-vs-two-senders part",
    )
    parser.add_argument(
        "--pg-subscribers", type=int, help="PostgreSQL list size (default: --subscribers)"
    )
    parser.add_argument(
        "--pg-fsync",
        choices=("on", "off"),
        default="on",
        help="the throwaway cluster's fsync (default on, as a real server)",
    )
    parser.add_argument(
        "--only",
        help=f"comma-separated parts among {','.join(SECTIONS)} (the base send runs when a "
        "part compares against it)",
    )
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    pg_count = args.pg_subscribers or args.subscribers
    wanted = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = wanted - set(SECTIONS)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    for part, off in (
        ("naive", not args.naive),
        ("slow", not args.slow),
        ("big", not args.big),
        ("million", not args.million),
        ("dkim", args.no_dkim),
        ("track", args.no_track),
        ("postgres", not args.postgres),
    ):
        if off:
            wanted.discard(part)
    if not (Path(SINK).exists() and Path(SOURCE).exists()):
        sys.exit(
            "bench needs Debian's postfix package (smtp-sink, smtp-source): apt-get install postfix"
        )

    # As an installed package runs: its modules compiled once (this machine's environment sets
    # PYTHONDONTWRITEBYTECODE, so an editable install would compile them at every command).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "newsletter")], check=True)
    report = Report()
    n = args.subscribers
    header = f"{datetime.now(UTC):%Y-%m-%d}, commit {git_text()}, {load_text()} at the start"
    print(f"bench_send.py: parts {', '.join(p for p in SECTIONS if p in wanted)}; {header}")
    size = message_size()
    print(f"message size of the sample edition: {size:,} bytes", flush=True)

    base: Run | None = None
    if wanted & NEEDS_BASE:
        section(
            f"send: {n:,} subscribers, 4 connections, {args.processes} process(es), and its "
            "reference"
        )
        base = our_send(n, 4, processes=args.processes)
        print(f"   base send: {run_text(base, n)}; {base.memory_text()}", flush=True)
        if "send" in wanted:
            ref_rate, ref_arrived = smtp_source(n, size)
            ratio = ratio_of(base.rate, ref_rate)
            report.check(
                f"send {n:,} subscribers, 4 connections, {args.processes} process(es), "
                f"{size / 1000:.0f} KB messages into `smtp-sink`",
                run_text(base, n),
                f"`smtp-source -d -s 4`, same count and size: {rate_text(ref_rate)} "
                f"({ref_arrived:,} arrived)",
                f"ratio {ratio:.2f}",
                ">= 0.5, all arrived, ledger all sent",
                ratio >= 0.5 and delivered_whole(base, n),
            )
        if "memory" in wanted:
            memory_check(report, base, f"{n:,} subscribers")
        if "naive" in wanted:
            naive = naive_loop(args.naive)
            ratio = ratio_of(base.rate, naive)
            report.check(
                "send against the naive render-per-subscriber loop",
                rate_text(base.rate),
                f"naive loop (render + premailer + EmailMessage + send, one connection), "
                f"{args.naive} messages: {rate_text(naive)}",
                f"x{ratio:.1f}",
                ">= x15",
                ratio >= 15,
            )
    if base and "dkim" in wanted:
        section("dkim: the same send, signed")
        signed = our_send(n, 4, dkim=True, processes=args.processes)
        rate_ratio, cpu_ratio = ratio_of(signed.rate, base.rate), ratio_of(base.cpu, signed.cpu)
        report.check(
            f"send {n:,} subscribers DKIM-signed (RSA 2048)",
            f"{run_text(signed, n)}; CPU {signed.cpu:.1f} s",
            f"unsigned, same run: {rate_text(base.rate)}; CPU {base.cpu:.1f} s "
            f"(CPU ratio unsigned/signed {cpu_ratio:.2f}; "
            f"{(signed.cpu - base.cpu) / max(signed.arrived, 1) * 1000:.2f} ms more a message)",
            f"{rate_ratio:.2f} in rate",
            ">= 0.5",
            rate_ratio >= 0.5 and delivered_whole(signed, n),
        )
    if base and "track" in wanted:
        section("track: the same send, clicks and opens tracked")
        tracked = our_send(n, 4, extra=TRACKED, processes=args.processes)
        report.check(
            f"send {n:,} subscribers, clicks and opens tracked",
            f"{run_text(tracked, n)}; CPU {tracked.cpu:.1f} s",
            f"untracked, same run: {rate_text(base.rate)}; CPU {base.cpu:.1f} s "
            f"({(tracked.cpu - base.cpu) / max(tracked.arrived, 1) * 1000:.2f} ms more a message)",
            f"{ratio_of(tracked.rate, base.rate):.2f} in rate (no target)",
            "",
            None,
        )
    if "slow" in wanted:
        section("slow: smtp-sink -w 1, 50 connections")
        slow = our_send(args.slow, 50, "-w", "1")
        ratio = slow.rate / 50
        # What the relay itself allows: the C client, 50 reused sessions, no start-up at all.
        floor_rate, _ = smtp_source(args.slow, size, sessions=50, sink_args=("-w", "1"))
        floor_seconds = args.slow / floor_rate
        report.check(
            f"slow relay (`smtp-sink -w 1`), 50 connections, {args.slow:,} subscribers",
            run_text(slow, args.slow),
            "ideal: 50 msg/s (50 connections, 1 s a message); `smtp-source -d -s 50`, same "
            f"relay: {rate_text(floor_rate)} ({floor_seconds:.1f} s, ratio {floor_rate / 50:.2f}"
            f"); the send's start-up and its own overhead: {slow.seconds - floor_seconds:+.2f} s "
            "over it",
            f"ratio {ratio:.2f}",
            ">= 0.95",
            ratio >= 0.95 and delivered_whole(slow, args.slow),
        )
    if base and "big" in wanted:
        section(f"big: {args.big:,} subscribers")
        big = our_send(args.big, 4, processes=args.processes)
        flat = ratio_of(big.memory.counted_mb, base.memory.counted_mb)
        report.check(
            f"send {args.big:,} subscribers",
            f"{run_text(big, args.big)}; {big.memory_text()}",
            f"{n:,} subscribers: {base.memory.counted_mb:.0f} MB {base.memory.counted_kind}",
            f"x{flat:.2f} in memory",
            f"<= x{FLAT_TARGET:.2f}",
            flat <= FLAT_TARGET,
        )
    if "postgres" in wanted:
        postgres_part(report, pg_count, args.pg_fsync == "on")
    if base and "million" in wanted:
        million_part(report, args.million, base, n, args.million_limit, args.processes)

    section("end")
    report.summary(header + f"; at the end {load_text()}")
    return 0  # figures, not a test: a FAIL is read in the output, not the exit status


if __name__ == "__main__":
    sys.exit(main())
