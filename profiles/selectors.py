"""Reads of the profiles app."""

from __future__ import annotations

from profiles.models import Profile

ANONYMOUS_SUFFIX = ":anonymous"


def profile_get(*, key: str) -> Profile | None:
    """The profile of the customer with this pseudonymous key, or None (also for a customer merged
    into another: its profile lives on in the survivor's)."""
    return (
        Profile.objects.select_related("customer", "feature_set", "model_version")
        .defer("feature_set__pipeline")
        .filter(customer__key=key, customer__merged_into__isnull=True)
        .first()
    )
