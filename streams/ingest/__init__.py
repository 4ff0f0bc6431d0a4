"""The ingest service: sources (Segment, Stripe, Zendesk, generic webhooks) -> contract-v1 events."""
