"""Exceptions shared across the node that carry their whole story in the message."""

from __future__ import annotations


class OperatorError(Exception):
    """A mistake or missing step on the operator's side (e.g. migrations not applied).

    The command line prints the message and exits 1, without a traceback: the message says what
    to do.
    """


class PermanentJobError(Exception):
    """Raise from a job handler when retrying cannot help (bad input, missing component).

    (Defined here, not in :mod:`dicom_node.queue`, which re-exports it: the pipeline's
    :class:`~dicom_node.pipeline.StudyNotAnalysable` derives from it, and ``noduletrack analyze``
    would otherwise import SQLAlchemy, ~0.3 s, for a class.)
    """
