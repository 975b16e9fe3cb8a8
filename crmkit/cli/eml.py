"""``crmkit activities eml``: a logged message back out as the .eml it was."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from crmkit.cli import App, pass_app
from crmkit.cli.output import counted
from crmkit.mail.archive import MailArchive, export_messages, kept_message

__all__ = ["activities_extras"]


def activities_extras(group: click.Group) -> None:
    @group.command("eml")
    @click.argument("activity_ids", nargs=-1)
    @click.option("--all", "every", is_flag=True, help="Every activity that kept its message.")
    @click.option(
        "--out",
        "-o",
        type=click.Path(path_type=Path),
        help="Write here: a file for one activity, a folder (ID.eml each) for several or --all.",
    )
    @pass_app
    def eml(app: App, activity_ids: tuple[str, ...], every: bool, out: Path | None) -> None:
        """Write the message an email activity logged, byte for byte as it was received or sent.

        One activity goes to standard output (or to --out FILE); several, or
        --all, go to the folder --out, one ID.eml each. Mail clients open .eml
        files.

        \b
        Example:
            crmkit activities eml ACT-12 > message.eml
            crmkit activities eml ACT-12 ACT-15 --out mail/
            crmkit activities eml --all --out mail/
        """
        if every == bool(activity_ids):
            raise click.UsageError("give activity ids, or --all")
        store = app.store(must_exist=True)
        archive = MailArchive(app.store_path)
        if len(activity_ids) == 1 and (out is None or not out.is_dir()):
            data = kept_message(store, archive, activity_ids[0])
            if out is None:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            else:
                out.write_bytes(data)
            return
        if out is None:
            raise click.UsageError("several messages need --out FOLDER")
        written = export_messages(store, archive, None if every else list(activity_ids), out)
        click.echo(f"{counted(len(written), 'message')} written to {out}")
