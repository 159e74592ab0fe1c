"""Errors caused by the user's input: reported as one line, without a traceback."""


class UserError(Exception):
    """A mistake in the command line, the data or a run directory."""
