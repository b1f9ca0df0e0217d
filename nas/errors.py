"""The one exception type for mistakes a user can make, and the exit codes every process of nas ends with.

Anything raised as `NasError` is the user's to fix: its message is one line that names the problem and
the fix. The CLI prints it without a traceback and exits with code 2; every other exception is a bug
(exit 1).
"""

from enum import IntEnum


class ExitCode(IntEnum):
    """What `nas` and its worker processes exit with (README: "Exit codes")."""

    OK = 0
    BUG = 1                 # an exception that is not the user's to fix, or a run that produced no answer
    BAD_INPUT = 2           # a NasError: one line on stderr names the problem and the fix
    ABORTED = 3             # a search worker that stopped itself after repeated trial errors (SearchAborted)
    INTERRUPTED = 130       # Ctrl-C (128 + SIGINT); finished trials are kept


class NasError(Exception):
    """Bad input: a file, an argument or a setting the user can correct."""


class SearchAborted(Exception):
    """A search stopped itself because trials keep raising errors; going on would only record more
    failures. Finished trials are kept; fix the cause and run the same command to resume (exit 1)."""
