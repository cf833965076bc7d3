"""Kafka access shared by the job's launcher, the ``dlq`` command, the ingest producers and the
benchmark: reading topics to their end (``scan``) and the exactly-once ledger (``ledger``)."""
