"""aiq-sync core (no Dagster imports)."""

import os

# pyarrow's default pool (mimalloc) keeps freed pages mapped: a 1M-line SQL load peaked
# ~40 MB higher with it (495 vs 455 MB, python -m aiq_sync.bench.sql_memory). The system
# allocator hands slices' memory back. An explicit ARROW_DEFAULT_MEMORY_POOL still wins.
if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
