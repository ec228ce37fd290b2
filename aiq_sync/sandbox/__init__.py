"""Local fakes of the commerce APIs aiq-sync talks to, for tests, demos and load runs.

Imports are lazy so ``python -m aiq_sync.sandbox.bigcommerce`` does not load the module twice.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BigCommerceSandbox", "Chaos", "Fault"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from aiq_sync.sandbox import bigcommerce

        return getattr(bigcommerce, name)
    raise AttributeError(name)
