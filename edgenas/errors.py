"""The one exception type a user can cause; the CLI prints it as one line, exit 2."""


class EdgenasError(Exception):
    """A problem the user can fix: bad config, bad data, unreachable device, ..."""
