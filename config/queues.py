"""Celery queue names, in one place. The GPU worker consumes only TRAINING."""

from enum import StrEnum


class Queue(StrEnum):
    DEFAULT = "default"
    INGEST = "ingest"
    PROFILES = "profiles"
    TRAINING = "training"
