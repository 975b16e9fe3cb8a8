"""``crmkit poll --once`` on a 10,000-message mailbox, against imapclient alone, in one run.

    python bench/bench_poll.py [--messages 10000] [--batch 200] [--store S3/crm.json]

Starts a private Dovecot (``crmkit.testing.mailservers``; Debian's
dovecot-imapd), fills one mailbox with N messages from ~N/5 senders (new
conversations and replies to them, plain text, some HTML, some with a small
attachment), then times, on the same mailbox:

a. imapclient alone: log in, select, fetch every message's ``BODY.PEEK[]`` in
   batches, as a script that only downloads mail would;
b. the ``crmkit poll --once`` command, as a user or cron runs it (start-up
   included), with a crmkit.toml whose [imap] reads that mailbox (``after =
   "none"``, so the mailbox is left as is): the same fetch, plus parsing,
   keeping every .eml and attachment, matching senders, threading and opening
   cases, and committing each batch with its progress;
c. the command again with nothing new (the cron run on a quiet inbox);
d. for scale: the standard library's email parser alone (compat32, the
   fastest policy) reading the same bytes from memory, no IMAP, no files, no
   store. Any poller that reads each message's parts pays at least this.

Target (issue 14, replacing issue 5's): (b) within 4x of (a) + (d), measured in the same run.
"""

from __future__ import annotations

import argparse
import email
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crmkit.store import Store
from crmkit.testing.mailservers import DovecotServer

T = TypeVar("T")
USER, PASSWORD = "support", "bench-password"


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def messages(count: int) -> list[bytes]:
    rng = random.Random(5)
    senders = [f"Customer {i} <c{i}@company{i % 97}.example>" for i in range(max(1, count // 5))]
    out: list[bytes] = []
    opened: list[tuple[str, str, str]] = []  # (sender, subject, message id)
    for i in range(count):
        msg = EmailMessage()
        mid = f"<bench-{i}@client.example>"
        if opened and rng.random() < 0.4:
            sender, subject, parent = rng.choice(opened)
            msg["Subject"] = f"Re: {subject}"
            msg["In-Reply-To"] = parent
            msg["References"] = parent
            body = f"Any news on this? ({i})\n\nOn Mon, Support wrote:\n> We are looking into it."
        else:
            sender = rng.choice(senders)
            subject = f"Problem {i}: {rng.choice(['printer', 'invoice', 'login', 'delivery'])}"
            msg["Subject"] = subject
            body = f"Hello, we have a problem with item {i}.\nThanks,\n{sender.split('<')[0]}"
            opened.append((sender, subject, mid))
        msg["From"] = sender
        msg["To"] = "support@example.com"
        msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
        msg["Message-ID"] = mid
        if i % 10 == 3:
            msg.set_content(body)
            msg.add_alternative(f"<p>{body}</p>", subtype="html")
        else:
            msg.set_content(body)
        if i % 20 == 7:
            msg.add_attachment(b"%PDF-1.4 " + os.urandom(2048), maintype="application", subtype="pdf",
                               filename=f"scan-{i}.pdf")  # fmt: skip
        out.append(msg.as_bytes())
    return out


def imapclient_fetch(dovecot: DovecotServer, batch: int) -> int:
    client = dovecot.connect(USER, tls="ssl")
    try:
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        total = 0
        for start in range(0, len(uids), batch):
            fetched = client.fetch(uids[start : start + batch], ["BODY.PEEK[]"])
            total += sum(len(data[b"BODY[]"]) for data in fetched.values())
        return total
    finally:
        client.logout()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; medians are reported")
    parser.add_argument(
        "--store",
        type=Path,
        help="poll into a copy of this store (e.g. bench_store.py --keep's S3) instead of an empty one",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, DovecotServer(Path(tmp) / "dovecot") as dovecot:
        dovecot.add_user(USER, PASSWORD)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.messages} messages, "
              f"median of {args.repeat} runs each")  # fmt: skip
        raws = messages(args.messages)
        client = dovecot.connect(USER)
        seconds, _ = timed(lambda: [client.append("INBOX", raw) for raw in raws])
        client.logout()
        print(f"appended in {seconds:.1f} s ({sum(map(len, raws)) / 1e6:.1f} MB)")
        command = [str(Path(sys.executable).with_name("crmkit")), "poll", "--once"]
        env = {**os.environ, "CRMKIT_IMAP_PASSWORD": PASSWORD}
        plains, polls, quiets, parses = [], [], [], []
        for run in range(args.repeat):  # a) b) c) d) in turn, so a noisy moment touches each alike
            plain, size = timed(lambda: imapclient_fetch(dovecot, args.batch))
            folder = Path(tmp) / f"run{run}"
            folder.mkdir()
            store = Store(folder / "crm.json")
            if args.store:  # the manifest and its files, as crmkit store copy would
                shutil.copytree(args.store.with_name(args.store.name + ".d"), folder / "crm.json.d")
                shutil.copyfile(args.store, folder / "crm.json")
            else:
                store.create()
            os.sync()  # the copy's flush is setup, not the poll's (the archive syncs before each commit)
            before = store.count("activities")
            (folder / "crmkit.toml").write_text(
                f'store = "crm.json"\n\n[imap]\nhost = "{dovecot.host}"\nport = {dovecot.ssl_port}\n'
                f'security = "ssl"\nuser = "{USER}"\ncafile = "{dovecot.cafile}"\nafter = "none"\n'
            )

            def poll(folder: Path = folder) -> str:
                done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"crmkit poll failed ({done.returncode}): {done.stderr}")
                return done.stdout.strip()

            ours, report = timed(poll)
            quiet, _ = timed(poll)
            parse_only, _ = timed(lambda: [email.message_from_bytes(raw) for raw in raws])
            done = Store(store.path)
            if done.count("activities") - before != args.messages:
                print(f"FAIL: {done.count('activities') - before} activities for {args.messages} messages")
                return 1
            plains.append(plain)
            polls.append(ours)
            quiets.append(quiet)
            parses.append(parse_only)
            print(f"  run {run + 1}: a {plain:.2f} s, b {ours:.2f} s, c {quiet:.2f} s, d {parse_only:.2f} s "
                  f"(b = {ours / (plain + parse_only):.2f}x a + d)")  # fmt: skip
        if args.store:
            print(f"polled into copies of {args.store}: {before:,} activities before")
        plain, ours, quiet, parse_only = map(statistics.median, (plains, polls, quiets, parses))
        target = 4 * (plain + parse_only)
        print()
        print(f"a. imapclient fetching {args.messages} messages ({size / 1e6:.1f} MB): {plain:7.2f} s "
              f"({args.messages / plain:,.0f} msg/s)")  # fmt: skip
        print(f"b. crmkit poll --once, filing them:            {ours:7.2f} s "
              f"({args.messages / ours:,.0f} msg/s)  = {ours / (plain + parse_only):.2f}x (a) + (d) "
              f"(target 4x: {target:.2f} s)")  # fmt: skip
        print(f"c. crmkit poll --once, nothing new:            {quiet:7.2f} s")
        print(f"d. email.message_from_bytes alone, in memory:  {parse_only:7.2f} s  = {parse_only / plain:.2f}x (a)")
        print(
            f"store: {done.count('activities')} activities, {done.count('cases')} cases, "
            f"{done.count('contacts')} contacts; peak RSS of a poll "
            f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB"
        )
        print("overall: " + ("PASS" if ours <= target else "FAIL") + f" ({report})"[:200])
        return 0

if __name__ == "__main__":
    raise SystemExit(main())
