"""Errors an operator can cause and fix. The CLI prints them as one line, never a traceback."""


class OperatorError(Exception):
    """A mistake or refusal the operator must act on: the message says what and what to do."""

    exit_code = 2  # usage/config/bad input


class Refused(OperatorError):
    """A safe refusal at run time (slot in use, resource held): nothing was changed."""

    exit_code = 1


class OutcomeUnknown(OperatorError):
    """A request whose answer never came (the daemon died or hung): it may or may not have acted."""

    exit_code = 4
