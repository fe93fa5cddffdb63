"""`python -m mlkit` is the `mlkit` command."""

from mlkit.cli import entry

entry()
