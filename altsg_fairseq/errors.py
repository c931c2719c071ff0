"""One clear line for bad input instead of a traceback from deep inside."""


class UsageError(SystemExit):
    """A mistake in the user's data, flags or files.

    Like argparse's errors it ends the program with a single line on stderr,
    "altsg_fairseq: error: what is wrong; what to do", and a non-zero status.
    """

    def __init__(self, message: str):
        self.message = message
        super().__init__(f"altsg_fairseq: error: {message}")


class AgreedStop(UsageError):
    """A ``UsageError`` that every data-parallel worker raises at the same point of a run, decided
    on what all of them hold (losses summed over the workers, the line the first worker sent in
    place of a checkpoint it could not read): the workers close the process group together before
    exiting, so that none exits while another still holds its connections (gloo's threads then
    abort that process: "terminate called without an active exception")."""
