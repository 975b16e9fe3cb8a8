"""``crmkit cases reply``: the team's answer to a case, sent over ``[smtp]`` and logged on it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

import click

from crmkit.cli import App, pass_app
from crmkit.cli.output import emit_json, json_option
from crmkit.errors import CrmkitError

__all__ = ["cases_extras"]


def _is_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _reply_text(app: App, case_id: str, message: str | None, file: IO[str] | None, force: bool) -> str:
    """The reply's text: -m, --file, or $EDITOR on a terminal (the customer's last message quoted)."""
    if message is not None and file is not None:
        raise click.UsageError("give the reply once: -m TEXT or --file PATH, not both")
    if message is not None:
        return message
    if file is not None:
        return file.read()
    if not _is_terminal():
        raise click.UsageError("give the reply with -m TEXT or --file PATH (no terminal for $EDITOR)")
    from crmkit.mail.reply import editor_text, last_customer_message, recipient_of, text_from_editor

    store = app.store(must_exist=True)
    case, _ = recipient_of(store, case_id, force=force)  # refused before anything is written, not after
    edited = click.edit(editor_text(last_customer_message(store, case["id"])), extension=".txt")
    return text_from_editor(edited or "")


def cases_extras(group: click.Group) -> None:
    """Add ``reply`` to the ``cases`` group."""

    @group.command("reply")
    @click.argument("case_id", metavar="CASE")
    @click.option("--message", "-m", help="The reply's text.")
    @click.option(
        "--file",
        "file",
        type=click.File("r", encoding="utf-8"),
        help="Read the reply's text from this file (- for standard input).",
    )
    @click.option(
        "--attach",
        "attachments",
        multiple=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Attach this file (repeatable).",
    )
    @click.option("--force", is_flag=True, help="Write even to a contact who opted out or bounced.")
    @click.option("--reopen", is_flag=True, help="Move a resolved or closed case back to pending.")
    @click.option("--dry-run", is_flag=True, help="Print the message that would go out; send nothing.")
    @json_option
    @pass_app
    def reply(
        app: App,
        case_id: str,
        message: str | None,
        file: IO[str] | None,
        attachments: tuple[Path, ...],
        force: bool,
        reopen: bool,
        dry_run: bool,
        as_json: bool,
    ) -> None:
        """Answer CASE's contact by mail over [smtp], and log the answer on the case.

        The text comes from -m, --file, or (with neither, on a terminal) $EDITOR,
        which shows the customer's last message below a marker line; what is
        below the marker is left out, and an empty text sends nothing (exit 1).
        The subject carries the case token and the message answers the case's
        last mail (In-Reply-To, References), so the customer's answer comes
        back to the case. Once the server takes it, the reply is logged as an
        email_out activity, a new or open case becomes pending (a resolved or
        closed one stays, unless --reopen), and the case's first response time
        is set if it has none. If the server refuses it, nothing is logged.
        A contact who opted out or bounced is not written to without --force.

        \b
        Example:
            crmkit cases reply CASE-12 -m "The fix is live; please try again."
            crmkit cases reply CASE-12 --file answer.txt --attach invoice-1042.pdf
            crmkit cases reply CASE-12 --dry-run -m "Checking…"
        """
        from crmkit.config import resolve_password
        from crmkit.mail.archive import MailArchive
        from crmkit.mail.reply import readable, reply_to_case

        text = _reply_text(app, case_id, message, file, force)
        smtp = app.config.smtp
        if smtp is None:
            raise CrmkitError(
                'replying needs an [smtp] table in crmkit.toml: host = "smtp.example.com", '
                'from = "Support <support@example.com>" '
                "(the password: CRMKIT_SMTP_PASSWORD or password_command)"
            )
        store = app.store(must_exist=True)
        password = resolve_password(smtp) if smtp.user and not dry_run else None
        result = reply_to_case(
            store,
            smtp,
            password,
            case_id,
            text,
            attachments=attachments,
            force=force,
            reopen=reopen,
            dry_run=dry_run,
            archive=MailArchive(app.store_path),
        )
        if as_json:
            data = result.as_json()
            if dry_run:
                data["message"] = readable(result.reply)
            emit_json(data)
            return
        if dry_run:
            click.echo(readable(result.reply))
            click.echo(f"dry run: nothing was sent to {result.reply.to}.")
            return
        for note in result.notes:
            click.echo(note, err=True)
        click.echo(
            f"Sent {result.reply.case} reply to {result.reply.to} ({result.reply.message_id}); "
            f"logged as {result.activity}, case {result.status}"
        )
