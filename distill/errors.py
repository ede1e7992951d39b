"""The one exception type the jobs turn into a one-line message."""


class DistillError(Exception):
    """A problem the user can fix; the message names the fix. Jobs print it as one line and exit 2."""

    def __init__(self, message: str):
        # messages quote file names and library errors; keep them on one line whatever they hold
        super().__init__(" ".join(str(message).split()))
