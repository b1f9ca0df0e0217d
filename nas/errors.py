"""The one exception type for mistakes a user can make.

Anything raised as `NasError` is the user's to fix: its message is one line that names the problem and
the fix. The CLI prints it without a traceback and exits with code 2; every other exception is a bug
(exit 1).
"""


class NasError(Exception):
    """Bad input: a file, an argument or a setting the user can correct."""


class SearchAborted(Exception):
    """A search stopped itself because trials keep raising errors; going on would only record more
    failures. Finished trials are kept; fix the cause and run the same command to resume (exit 1)."""
