"""``crmkit poll --once`` on a 10,000-message mailbox, against imapclient alone, in one run.

    python bench/bench_poll.py [--messages 10000] [--batch 200] [--store S3/crm.json]

Starts a private Dovecot (``crmkit.testing.mailservers``; Debian's
dovecot-imapd), fills one mailbox with N messages from ~N/5 senders (new
conversations and replies to them, plain text, some HTML, some with a small
attachment), then times, on the same mailbox:

a. imapclient alone: log in, select, fetch every message's ``BODY.PEEK[]`` in
   batches, as a script that only downloads mail would;
b. crmkit's poller: the same fetch, plus parsing, keeping every .eml and
   attachment, matching senders, threading and opening cases, and committing
   each batch with its progress (``after = none``, so the mailbox is left as is);
c. the poller again with nothing new (the cron run on a quiet inbox);
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
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crmkit.config import MailServer, Secret
from crmkit.mail.archive import MailArchive
from crmkit.mail.imap import poll_once
from crmkit.mail.inbox import InboxRules
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
    parser.add_argument(
        "--store",
        type=Path,
        help="poll into a copy of this store (e.g. bench_store.py --keep's S3) instead of an empty one",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, DovecotServer(Path(tmp) / "dovecot") as dovecot:
        dovecot.add_user(USER, PASSWORD)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.messages} messages")
        raws = messages(args.messages)
        client = dovecot.connect(USER)
        seconds, _ = timed(lambda: [client.append("INBOX", raw) for raw in raws])
        client.logout()
        print(f"appended in {seconds:.1f} s ({sum(map(len, raws)) / 1e6:.1f} MB)")

        plain, size = timed(lambda: imapclient_fetch(dovecot, args.batch))
        server = MailServer("imap", dovecot.host, dovecot.ssl_port, security="ssl", user=USER, timeout=60)
        context = ssl.create_default_context(cafile=str(dovecot.cafile))
        store = Store(Path(tmp) / "crm.json")
        if args.store:  # the manifest and its files, as crmkit store copy would
            shutil.copytree(args.store.with_name(args.store.name + ".d"), Path(tmp) / "crm.json.d")
            shutil.copyfile(args.store, Path(tmp) / "crm.json")
            os.sync()  # the copy's flush is setup, not the poll's (the archive syncs before each commit)
            print(f"polling into a copy of {args.store}: {store.count('contacts'):,} contacts, "
                  f"{store.count('activities'):,} activities")  # fmt: skip
        before = store.count("activities")
        rules = InboxRules()

        def poll() -> object:
            return poll_once(
                Store(store.path), server, Secret(PASSWORD), rules=rules, archive=MailArchive(store.path),
                after="none", move_to=None, batch=args.batch, commit_every=args.batch, ssl_context=context,
            )  # fmt: skip

        ours, report = timed(poll)
        quiet, _ = timed(poll)
        parse_only, _ = timed(lambda: [email.message_from_bytes(raw) for raw in raws])
        target = 4 * (plain + parse_only)
        done = Store(store.path)
        print()
        print(f"a. imapclient fetching {args.messages} messages ({size / 1e6:.1f} MB): {plain:7.2f} s "
              f"({args.messages / plain:,.0f} msg/s)")  # fmt: skip
        print(f"b. crmkit poll --once, filing them:          {ours:7.2f} s "
              f"({args.messages / ours:,.0f} msg/s)  = {ours / (plain + parse_only):.2f}x (a) + (d) "
              f"(target 4x: {target:.2f} s)")  # fmt: skip
        print(f"c. crmkit poll --once, nothing new:          {quiet:7.2f} s")
        print(f"d. email.message_from_bytes alone, in memory: {parse_only:7.2f} s  = {parse_only / plain:.2f}x (a)")
        print(
            f"store: {done.count('activities')} activities, {done.count('cases')} cases, "
            f"{done.count('contacts')} contacts; peak RSS "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
        )
        ok = done.count("activities") - before == args.messages
        print("overall: " + ("PASS" if ok and ours <= target else "FAIL") + f" ({report})"[:200])
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
