"""Pure, typed record logic of the MarketLag DLQ job: no Flink imports anywhere here."""
