"""The errors a user sees. Every command prints these without a traceback and exits 2.

They live here, below every command and library module, so that library code never imports a
``cli`` module to raise them.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input: printed without a traceback, exit code 2."""


class ConfigError(ValueError):
    """A configuration problem, with a message naming the file and field at fault."""


class DataError(ValueError):
    """Invalid input data; the message names file, line and field."""
