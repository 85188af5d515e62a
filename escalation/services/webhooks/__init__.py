"""GitHub and GitLab webhooks: verified, de-duplicated, and mapped onto event ingestion.

``common`` verifies and de-duplicates deliveries, keeps the one run several webhook kinds describe,
and turns a job's outcome into an ``event_ingest`` call; ``github`` and ``gitlab`` read the payloads.
"""
