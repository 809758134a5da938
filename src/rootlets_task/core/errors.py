"""The one exception type users see: a message that names the file and the fix."""


class RootletsError(Exception):
    """A problem with the user's input or environment, reported as one line and a non-zero exit."""
