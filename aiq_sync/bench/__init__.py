"""Benchmarks. `aiq-sync bench` (harness.py): the sync at scale against the raw-fetch floor
(floor.py) and dlt (peer_dlt.py, needs the `peer` extra: `make bench` installs it), plus the
rate-limited quota run (quota.py). `python -m aiq_sync.bench.sql_memory`: a SQL source's
peak memory. Each contender runs in its own process so its peak RSS is its own.
"""
