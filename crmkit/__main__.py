"""``python -m crmkit`` runs the CLI."""

from crmkit.cli import main

main(prog_name="crmkit")
