"""The ingest side: what feeds the input topics and makes sure nothing is dropped on the way.

``producer`` (acknowledged, dead-lettered or spooled, never dropped), ``spool`` (the durable
fallback outside Kafka), ``drain`` (spool to Kafka, exactly once), ``handlers`` (the two
Lambda-style functions).
"""
