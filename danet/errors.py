"""The one exception type for mistakes a user can fix (bad data, flags, checkpoints).

Entry points catch it and print its message on one line, without a traceback unless ``--debug``.
Its message names the culprit (file, list line, flag or tensor) and says what to do.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one clear line."""
