"""Celery queue names, in one place. The GPU worker consumes only TRAINING."""

from enum import StrEnum


class Queue(StrEnum):
    DEFAULT = "default"
    INGEST = "ingest"
    PROFILES = "profiles"
    # heavy audience work (lookalike and cluster refreshes, k-means) apart from real-time refreshes
    SEGMENTS = "segments"
    TRAINING = "training"
