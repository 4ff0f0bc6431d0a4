"""Alert delivery: routing to receivers, grouping, silences, and one Notifier per channel."""
