"""One clear line for bad input instead of a traceback from deep inside."""


class UsageError(SystemExit):
    """A mistake in the user's data, flags or files.

    Like argparse's errors it ends the program with a single line on stderr,
    "altsg_fairseq: error: what is wrong; what to do", and a non-zero status.
    """

    def __init__(self, message: str):
        self.message = message
        super().__init__(f"altsg_fairseq: error: {message}")
