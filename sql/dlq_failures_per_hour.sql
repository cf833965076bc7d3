-- Failures per feed, category and error type per hour of failure (the DLQ record's time).
SELECT feed, `hour`, category, error_type, COUNT(*) AS failures
FROM (
  SELECT 'rss' AS feed, DATE_FORMAT(ts, 'yyyy-MM-dd HH:00') AS `hour`,
         `error`.`category` AS category, `error`.`type` AS error_type
  FROM dlq_rss_events
  UNION ALL
  SELECT 'polymarket' AS feed, DATE_FORMAT(ts, 'yyyy-MM-dd HH:00') AS `hour`,
         `error`.`category` AS category, `error`.`type` AS error_type
  FROM dlq_polymarket_price_hourly
)
GROUP BY feed, `hour`, category, error_type
