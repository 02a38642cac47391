"""Reliability and security campaign of Omni Connectors: chaos scenarios against real processes and backends,
fuzzing of every decoder that reads untrusted bytes, and the report (``RELIABILITY.md``) they produce.

Run it with ``python -m reliability --out . --seed N`` (see :mod:`reliability.__main__`).
"""
