"""User-facing errors: one line that names the file, row or key and says what would fix it."""


class SgpoError(Exception):
    """A bad input, config or run folder. The CLI prints the message on one line and exits non-zero."""
