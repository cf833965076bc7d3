"""Operational tooling for the MarketLag DLQ: topics, stats, monitor, analyze, replay."""
