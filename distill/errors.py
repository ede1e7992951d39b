"""The one exception type the jobs turn into a one-line message."""


class DistillError(Exception):
    """A problem the user can fix; the message names the fix. Jobs print it as one line and exit 2."""
