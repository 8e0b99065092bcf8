"""Errors that the command line shows to the user as a message, not a traceback."""


class UserError(Exception):
    """An invalid option, a missing file or another problem the user can fix.

    The message names the file or option, states what is wrong and what to do.
    """
