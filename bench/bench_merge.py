"""``crmkit merge --send`` of 2,000 messages, against mailmerge and a bare smtplib loop, in one run.

    python bench/bench_merge.py [--messages 2000] [--security ssl|starttls]

Starts crmkit's test SMTP server (``crmkit.testing.mailservers.SMTPServer``,
aiosmtpd) with TLS and AUTH in a child process, so that it does not share a
GIL with the senders being timed, then sends the same N short personalised
plain-text messages (UTF-8 names) to N recipients three ways:

a. the ``mailmerge`` package from PyPI (awdeorio/mailmerge), run in this
   process through its click command the way a user runs it: a template with
   TO/FROM/SUBJECT, a CSV database, ``mailmerge_server.conf``, and
   ``--no-dry-run --no-limit``, the password typed at its prompt (stubbed
   here). It opens a new connection and logs in again for every message;
b. a bare smtplib loop: one connection (certificate verified), one login,
   ``sendmail`` of the N messages built beforehand: the practical limit of a
   Python sender on one connection;
c. ``crmkit merge campaign.txt --send`` on a store of N contacts, in-process
   through click, its journal included.

The sink forgets message bodies and counts each part's messages by RCPT
address (cleared between parts); each part must deliver exactly one message
to each recipient.

Targets (issue 6): (c) at least 4x (a) and at least 0.8x (b). Exit status 0
when every part delivered exactly N messages, 1 otherwise (including (c) not
available); the targets decide the PASS/FAIL line.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import logging
import os
import resource
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Literal, TypeVar
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crmkit.testing.mailservers import ReceivedMessage, SMTPServer

T = TypeVar("T")
USER, PASSWORD = "bench", "bench-password"
FROM = "Sales <sales@example.com>"
FROM_ADDR = "sales@example.com"
SUBJECT = "Your offer, {{ first_name }}"
BODY = """\
Dear {{ first_name }},

We have a new offer for you this month: 20% off every annual plan, and a free
onboarding session for your whole team. The offer runs until the end of the
month, and you can take it up with one reply to this message.

If you have questions, call us on +1 555 0100 or just write back.

Best regards,
The sales team
"""


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def figure(label: str, seconds: float, count: int) -> str:
    return f"{label:<44}{seconds:7.2f} s ({count / seconds:,.0f} msg/s)"


def recipients(count: int) -> list[tuple[str, str]]:
    """(name, email) of each contact."""
    return [(f"Nguyễn Thị Hoa {i}", f"hoa{i}@example.com") for i in range(count)]


def first_name(name: str) -> str:
    return name.split()[0]


# --------------------------------------------------------------------------------------------
# The sink, in a child process: one JSON line per command on stdin ("stats", "clear", "stop").


class CountingSMTPServer(SMTPServer):
    """Keeps each message's envelope and size, not its bytes."""

    received_bytes = 0

    def _keep(self, message: ReceivedMessage) -> Literal["keep", "drop_before_reply", "drop_after_reply"]:
        with self._lock:  # a reentrant Condition: SMTPServer._keep takes it again
            self.received_bytes += len(message.data)
            return super()._keep(dataclasses.replace(message, data=b""))


def serve_sink(security: str, pipelining: bool = False) -> int:
    # aiosmtpd logs "Session.login_data is deprecated" at every AUTH.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    with CountingSMTPServer(
        auth={USER: PASSWORD},
        implicit_tls=security == "ssl",
        starttls=security == "starttls",
        pipelining=pipelining,
    ) as sink:
        print(json.dumps({"host": sink.host, "port": sink.port, "cafile": str(sink.cafile)}), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "stop":
                break
            if command == "clear":
                sink.clear()
                sink.received_bytes = 0
                answer: dict[str, Any] = {"ok": True}
            elif command == "stats":
                received = sink.messages
                answer = {
                    "messages": len(received),
                    "bytes": sink.received_bytes,
                    "rcpts": Counter(rcpt.lower() for msg in received for rcpt in msg.rcpt_tos),
                    "logins": Counter(str(msg.login) for msg in received),
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                }
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(json.dumps(answer), flush=True)
    return 0


class Sink:
    """The parent's handle on the sink process."""

    def __init__(self, security: str, pipelining: bool = False) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--sink", security]
            + (["--pipelining"] if pipelining else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        hello = self._read()
        self.host: str = hello["host"]
        self.port: int = hello["port"]
        self.cafile: str = hello["cafile"]

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the SMTP sink exited (status {self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                self.ask("stop")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check(sink: Sink, expected: list[str]) -> tuple[bool, str]:
    """Did each expected address get exactly one message, and nobody else anything?"""
    stats = sink.ask("stats")
    rcpts: dict[str, int] = stats["rcpts"]
    want = {address.lower() for address in expected}
    once = sum(1 for address in want if rcpts.get(address) == 1)
    missing = sum(1 for address in want if address not in rcpts)
    extra = sum(1 for address in rcpts if address not in want)
    ok = stats["messages"] == len(expected) and once == len(want) and not extra
    average = stats["bytes"] / stats["messages"] if stats["messages"] else 0
    logins = ", ".join(f"{user}: {n}" for user, n in stats["logins"].items())
    note = (
        f"sink got {stats['messages']} messages (avg {average:,.0f} bytes; AUTH {logins or 'none'}), "
        f"{once}/{len(want)} recipients exactly once, {missing} missing, {extra} unexpected: "
        + ("OK" if ok else "WRONG")
    )
    sink.ask("clear")
    return ok, note


# --------------------------------------------------------------------------------------------
# a. mailmerge


def run_mailmerge(
    folder: Path, sink: Sink, security: str, people: list[tuple[str, str]]
) -> tuple[float, str]:
    from click.testing import CliRunner
    from mailmerge.__main__ import main as mailmerge_main

    folder.mkdir()
    template = folder / "mailmerge_template.txt"
    template.write_text(f"TO: {{{{ email }}}}\nFROM: {FROM}\nSUBJECT: {SUBJECT}\n\n{BODY}", encoding="utf-8")
    database = folder / "mailmerge_database.csv"
    with database.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["email", "name", "first_name"])
        writer.writerows([address, name, first_name(name)] for name, address in people)
    config = folder / "mailmerge_server.conf"
    mode = {"ssl": "SSL/TLS", "starttls": "STARTTLS"}[security]
    config.write_text(
        f"[smtp_server]\nhost = {sink.host}\nport = {sink.port}\nsecurity = {mode}\n"
        f"username = {USER}\nratelimit = 0\n"
    )
    args = ["--template", str(template), "--database", str(database), "--config", str(config)]
    args += ["--no-dry-run", "--no-limit"]
    # mailmerge asks for the password once with getpass; its SSL/TLS mode builds
    # ssl.create_default_context(), which trusts the CA file SSL_CERT_FILE names.
    with mock.patch("getpass.getpass", return_value=PASSWORD):
        seconds, result = timed(
            lambda: CliRunner().invoke(mailmerge_main, args, env={"SSL_CERT_FILE": sink.cafile})
        )
    if result.exit_code != 0:
        raise RuntimeError(
            f"mailmerge failed ({result.exit_code}): {result.output[-2000:]} {result.exception!r}"
        )
    return seconds, result.output


# --------------------------------------------------------------------------------------------
# b. bare smtplib loop


def build_messages(people: list[tuple[str, str]]) -> list[tuple[str, bytes]]:
    out = []
    for name, address in people:
        first = first_name(name)
        msg = EmailMessage()
        msg["From"] = FROM
        msg["To"] = address
        msg["Subject"] = SUBJECT.replace("{{ first_name }}", first)
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = make_msgid(domain="example.com")
        msg.set_content(BODY.replace("{{ first_name }}", first))
        out.append((address, msg.as_bytes()))
    return out


def bare_loop(sink: Sink, security: str, messages: list[tuple[str, bytes]]) -> None:
    context = ssl.create_default_context(cafile=sink.cafile)
    smtp: smtplib.SMTP
    if security == "ssl":
        smtp = smtplib.SMTP_SSL(sink.host, sink.port, context=context, timeout=60)
    else:
        smtp = smtplib.SMTP(sink.host, sink.port, timeout=60)
        smtp.starttls(context=context)
    with smtp:
        smtp.login(USER, PASSWORD)
        for address, data in messages:
            smtp.sendmail(FROM_ADDR, [address], data)


# --------------------------------------------------------------------------------------------
# c. crmkit merge --send


def run_crmkit(
    folder: Path, sink: Sink, security: str, people: list[tuple[str, str]]
) -> tuple[float | None, str]:
    from click.testing import CliRunner

    from crmkit.cli import main as crmkit_main
    from crmkit.store import Store

    folder.mkdir()
    store = Store(folder / "crm.json")
    with store.transaction():
        for name, address in people:
            store.add("contacts", {"name": name, "email": address}, actor="bench")
    config = folder / "crmkit.toml"
    config.write_text(
        "[smtp]\n"
        f'host = "{sink.host}"\n'
        f"port = {sink.port}\n"
        f'security = "{security}"\n'
        f'user = "{USER}"\n'
        f'from = "{FROM}"\n'
        f"cafile = {json.dumps(sink.cafile)}\n",
        encoding="utf-8",
    )
    template = folder / "campaign.txt"
    template.write_text(f"Subject: {SUBJECT}\n\n{BODY}", encoding="utf-8")
    args = ["--store", str(store.path), "--config", str(config), "merge", str(template)]
    args += ["--send", "--name", "bench", "--json"]
    seconds, result = timed(
        lambda: CliRunner().invoke(crmkit_main, args, env={"CRMKIT_SMTP_PASSWORD": PASSWORD})
    )
    if result.exit_code != 0:
        detail = (
            f" {result.exception!r}"
            if result.exception and not isinstance(result.exception, SystemExit)
            else ""
        )
        return None, (result.output.strip() + detail)[-1000:]
    return seconds, result.output.strip()


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--security", choices=("ssl", "starttls"), default="ssl")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="run (b) and (c) this many times, taking turns, and compare medians (a shared VM is noisy)",
    )
    parser.add_argument("--sink", choices=("ssl", "starttls"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--pipelining",
        action="store_true",
        help="the sink offers PIPELINING, as Postfix and the big providers do (smtplib cannot use it)",
    )
    args = parser.parse_args(argv)
    if args.sink:
        return serve_sink(args.sink, args.pipelining)

    n, security = args.messages, args.security
    people = recipients(n)
    addresses = [address for _, address in people]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {n} messages, security {security}, AUTH")
    with tempfile.TemporaryDirectory() as tmp, Sink(security, args.pipelining) as sink:
        work = Path(tmp)
        print(f"SMTP sink (aiosmtpd, separate process) on {sink.host}:{sink.port}")

        mm_seconds, _ = run_mailmerge(work / "mailmerge", sink, security, people)
        mm_ok, mm_note = check(sink, addresses)

        messages = build_messages(people)
        bare_runs: list[float] = []
        ours_runs: list[float] = []
        bare_ok = ours_ok = True
        ours_seconds: float | None = None
        for turn in range(max(1, args.repeat)):
            seconds, _ = timed(lambda: bare_loop(sink, security, messages))
            bare_runs.append(seconds)
            ok, bare_note = check(sink, addresses)
            bare_ok = bare_ok and ok
            ours, report = run_crmkit(work / f"crmkit-{turn}", sink, security, people)
            if ours is None:
                ours_ok = False
                break
            ours_runs.append(ours)
            ok, ours_note = check(sink, addresses)
            ours_ok = ours_ok and ok
        bare_seconds = statistics.median(bare_runs)
        if ours_runs:
            ours_seconds = statistics.median(ours_runs)
        sink_rss = sink.ask("stats")["peak_rss_mb"]

    mm_rate, bare_rate = n / mm_seconds, n / bare_seconds
    print()
    print(figure("a. mailmerge --no-dry-run, new connections:", mm_seconds, n))
    print(
        "   (in-process via click; TLS handshake + login for every message"
        + ("; its STARTTLS does not verify the certificate)" if security == "starttls" else ")")
    )
    print(f"   {mm_note}")
    print(
        figure("b. bare smtplib loop, one connection:", bare_seconds, n)
        + f"  (median of {len(bare_runs)}: "
        + ", ".join(f"{t:.2f}" for t in bare_runs)
        + " s)"
    )
    print(f"   {bare_note}")
    targets = False
    if ours_seconds is None:
        print("c. crmkit merge --send: not available")
        print("   " + (report.replace("\n", "\n   ") or "(no output)"))
    else:
        ours_rate = n / ours_seconds
        vs_mm, vs_bare = ours_rate / mm_rate, ours_rate / bare_rate
        targets = vs_mm >= 4 and vs_bare >= 0.8
        print(
            figure("c. crmkit merge --send, journal included:", ours_seconds, n) + "  "
            f"= {vs_mm:.2f}x mailmerge (target >= 4x), {vs_bare:.2f}x bare loop (target >= 0.8x)"
        )
        print(f"   median of {len(ours_runs)}: " + ", ".join(f"{t:.2f}" for t in ours_runs) + " s; each run "
              "on a new store and campaign, taking turns with (b)")  # fmt: skip
        print(f"   {ours_note}")
        print(f"   crmkit: {report}"[:300])
    print(
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
        f"(this process; the sink {sink_rss:.0f} MB)"
    )
    ok = mm_ok and bare_ok and ours_ok
    why = "" if ours_seconds is not None else " (crmkit merge not available)"
    print("overall: " + ("PASS" if ok and targets else "FAIL") + why)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
