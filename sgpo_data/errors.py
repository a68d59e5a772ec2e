"""User-facing errors and exit codes: one line that names the file, row, key or server and says what would fix it.

Exit codes of the CLI (docs/ARCHITECTURE.md, "Exit codes"):
  0  every row of every stage run is ok
  2  bad input, config or run folder (SgpoError), or the run folder is locked by another process
  3  the stages finished but some rows are in error (row statuses); a plain rerun retries exactly those rows
  4  a service failed (ServiceError) and stopped the stage; a plain rerun resumes once it is back
"""

EXIT_OK, EXIT_USAGE, EXIT_ROWS_FAILED, EXIT_SERVICE = 0, 2, 3, 4


class SgpoError(Exception):
    """A bad input, config or run folder. The CLI prints the message on one line and exits 2."""

    exit_code = EXIT_USAGE


class ServiceError(SgpoError):
    """A server that is down, refuses the credentials or rate-limits past the retries: the stage stops; shards
    it had not finished stay unmarked, and every call that had succeeded is in the call cache."""

    exit_code = EXIT_SERVICE


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for one-line errors."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
