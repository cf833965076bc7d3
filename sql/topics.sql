-- Flink SQL tables over the seven topics of SPEC section 2, for the SQL client and for
-- ad-hoc analysis. Placeholders such as ${bootstrap_servers} are filled from conf/job.yaml
-- by `dlq sql`:
--   .venv/bin/dlq sql > /tmp/marketlag.sql && sql-client.sh -i /tmp/marketlag.sql
-- Everything is read read_committed: what the exactly-once sinks have committed.

-- Inputs: raw bytes plus the record's position, as the job sees them.
CREATE TABLE rss_events (
  `key` BYTES,
  `value` BYTES,
  `topic` STRING METADATA VIRTUAL,
  `partition` INT METADATA VIRTUAL,
  `offset` BIGINT METADATA VIRTUAL,
  `ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',
  `headers` MAP<STRING, BYTES> METADATA
) WITH (
  'connector' = 'kafka',
  'topic' = '${topics.rss.input}',
  'properties.bootstrap.servers' = '${bootstrap_servers}',
  'properties.isolation.level' = 'read_committed',
  'scan.startup.mode' = 'earliest-offset',
  'key.format' = 'raw',
  'key.fields' = 'key',
  'value.format' = 'raw',
  'value.fields-include' = 'EXCEPT_KEY'
);

CREATE TABLE polymarket_price_hourly WITH (
  'topic' = '${topics.polymarket.input}'
) LIKE rss_events;

-- Clean records (SPEC section 4).
CREATE TABLE clean_rss_events (
  `event_id` STRING,
  `source` STRING,
  `title` STRING,
  `link` STRING,
  `published_at` STRING,
  `published_at_ms` BIGINT,
  `summary` STRING,
  `keywords` ARRAY<STRING>,
  `_source` ROW<`topic` STRING, `partition` INT, `offset` BIGINT>
) WITH (
  'connector' = 'kafka',
  'topic' = '${topics.rss.clean}',
  'properties.bootstrap.servers' = '${bootstrap_servers}',
  'properties.isolation.level' = 'read_committed',
  'scan.startup.mode' = 'earliest-offset',
  'format' = 'json'
);

CREATE TABLE clean_polymarket_price_hourly (
  `market_id` STRING,
  `outcome` STRING,
  `hour` STRING,
  `hour_ms` BIGINT,
  `price` DOUBLE,
  `volume` DOUBLE,
  `_source` ROW<`topic` STRING, `partition` INT, `offset` BIGINT>
) WITH (
  'connector' = 'kafka',
  'topic' = '${topics.polymarket.clean}',
  'properties.bootstrap.servers' = '${bootstrap_servers}',
  'properties.isolation.level' = 'read_committed',
  'scan.startup.mode' = 'earliest-offset',
  'format' = 'json'
);

-- DLQ envelopes v1 (SPEC section 5). Bounded at the offsets present when a query starts, so
-- an analysis query returns a final answer, like a report.
CREATE TABLE dlq_rss_events (
  `schema` STRING,
  `source` ROW<`topic` STRING, `partition` INT, `offset` BIGINT, `timestamp` BIGINT,
               `key_b64` STRING, `headers` ARRAY<ARRAY<STRING>>>,
  `payload_b64` STRING,
  `payload_text` STRING,
  `error` ROW<`category` STRING, `type` STRING, `message` STRING, `field` STRING,
              `stacktrace` STRING>,
  `attempts` INT,
  `failed_at` STRING,
  `job` ROW<`name` STRING, `operator` STRING>,
  `replay` ROW<`count` INT>,
  `ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp'
) WITH (
  'connector' = 'kafka',
  'topic' = '${topics.rss.dlq}',
  'properties.bootstrap.servers' = '${bootstrap_servers}',
  'properties.isolation.level' = 'read_committed',
  'scan.startup.mode' = 'earliest-offset',
  'scan.bounded.mode' = 'latest-offset',
  'format' = 'json'
);

CREATE TABLE dlq_polymarket_price_hourly WITH (
  'topic' = '${topics.polymarket.dlq}'
) LIKE dlq_rss_events;

CREATE TABLE dlq_parking WITH (
  'topic' = '${topics.parking}'
) LIKE dlq_rss_events;
