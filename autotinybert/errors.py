"""The one base class for mistakes a user can fix (bad input, wrong file, impossible request).

The CLI prints these as ``error: <message>`` and exits with status 2, without a traceback; anything else is a bug
and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input that the user can fix; the message names the problem and the fix."""
