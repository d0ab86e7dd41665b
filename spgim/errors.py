"""The one exception type that the command line turns into a single line on stderr."""


class SpgimError(Exception):
    """A user-facing failure: bad input, a mismatched artifact, a missing dependency.

    The message must be one line that says what is wrong and, where it helps, what to do.
    ``exit_code`` is what the ``spgim`` command exits with.
    """

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
