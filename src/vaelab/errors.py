"""The one exception type that user-facing mistakes raise."""


class VaelabError(Exception):
    """A problem with the user's input, data or files.

    Its message is one line that names the problem and, where possible, what to do about it.
    The command line prints it without a traceback and exits with a non-zero code.
    """


def plural(count: int, noun: str) -> str:
    """'1 image', '2 images': counts in messages read as English."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
