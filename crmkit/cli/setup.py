"""Getting started: ``crmkit init`` and ``crmkit quickstart``."""

from __future__ import annotations

import click

__all__ = ["register"]


def register(main: click.Group) -> None:
    pass
