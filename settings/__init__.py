"""The project's settings: ``conf/job.yaml`` and the environment, read once at the edge (the
job's ``main``, the ``dlq`` command, an ingest handler) into one frozen object."""
