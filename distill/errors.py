"""The one exception type the jobs turn into a one-line message."""


class DistillError(Exception):
    """A problem the user can fix; the message names the fix. Jobs print it as one line and exit 2."""

    def __init__(self, message: str):
        # messages quote file names and library errors; keep them on one line whatever they hold
        super().__init__(" ".join(str(message).split()))


class SettingError(DistillError):
    """A settings object was given a value out of range: names the object's field (e.g.
    `DistillSettings.ipc`); the command line layer re-words it with the config key (`distill.ipc`)."""

    def __init__(self, owner: str, field: str, problem: str, value: object):
        self.owner, self.field, self.problem, self.value = owner, field, problem, value
        super().__init__(f"{owner}.{field} {problem} (got {value!r})")
