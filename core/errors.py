"""Errors a user can act on.

A ``DuetError`` carries a one-line message that names the file, table or column at fault and what to do.
The command line prints it as ``duet: error: <message>`` and exits non-zero; anything else that escapes
is a bug and is reported with a hint to re-run with ``--verbose`` for the traceback.
"""

from collections.abc import Sequence


class DuetError(Exception):
    """A failure caused by input or environment, with a message meant for the user.

    ``fields`` name the inputs at fault as the raising code calls them (a config field such as ``users``, a
    parameter such as ``conf``). Base and stage layers know no command line: their message says what is
    wrong, and the command line adds the flags that set those inputs (``duet.flags.flags_for``).
    """

    def __init__(self, message: str, *, fields: Sequence[str] = ()):
        super().__init__(message)
        self.fields = tuple(fields)


class InputError(DuetError):
    """An input file cannot be ingested as a whole (missing, empty, unknown format or columns)."""


class ValidationFailed(DuetError):
    """A data quality suite failed; the message names the failed expectations."""
