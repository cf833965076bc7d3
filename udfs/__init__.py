"""Pure, typed record logic of the MarketLag DLQ job: parse, validate, normalise, build and
read envelopes. No I/O, no configuration files, no Kafka client, no Flink anywhere here:
whatever it needs is passed in."""
