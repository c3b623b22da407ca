"""Exceptions shared across the node that carry their whole story in the message."""

from __future__ import annotations


class OperatorError(Exception):
    """A mistake or missing step on the operator's side (e.g. migrations not applied).

    The command line prints the message and exits 1, without a traceback: the message says what
    to do.
    """
