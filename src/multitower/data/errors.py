"""Errors raised by data readers.

A reader raises :class:`BadRecordError` for one record that cannot be used (an
unreadable file, an empty text, a token outside the vocabulary). The training
data loader counts and skips such records, or re-raises them in strict mode, so a
single bad file never crashes a run deep inside a worker.
"""

from __future__ import annotations


class BadRecordError(ValueError):
    """One data record is unusable.

    Args:
        message: what is wrong, naming the record (path or index) and the cause.
    """
