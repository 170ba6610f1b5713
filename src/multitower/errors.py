"""The error every layer raises for a problem the user can fix (a path, a value, a run directory).

The command line prints it without a traceback and exits with code 1; a bad
config is a :class:`multitower.config.ConfigError` instead (exit code 2).
"""

from __future__ import annotations


class UserError(Exception):
    """A user-facing error: printed without a traceback, exit code 1."""
