"""Moved: the claims ledger is :mod:`covtl.book.claims`, a cell's statistics :mod:`covtl.book.evidence`.

Only :data:`CONTROLLED` is left here, for ``tests/test_study.py``; import it from
:mod:`covtl.book.claims` and delete this module.
"""

from .book.claims import CONTROLLED

__all__ = ["CONTROLLED"]
