"""Kafka access shared by the job, the ``dlq`` command, the ingest producers and the
benchmark: reading topics to their end (``scan``), the exactly-once loop of replay and drain
(``ledger``, ``producers``), the brokers' topics, access and users (``admin``, ``acl``,
``scram``), and the claim checks an envelope refers to when its payload is too large for Kafka
(``claims``)."""
