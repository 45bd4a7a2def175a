"""``python -m brokeragents`` runs the CLI."""

from brokeragents.cli import main

main()
