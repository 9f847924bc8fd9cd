"""Which stored rows depend on which key of the HMAC key rings, and re-keying what can be re-keyed
(README "Rotating keys").

A key may leave its ring only when no row depends on it:
- suppression keys: suppressed and restricted subjects, and access exports still on disk (erasure
  finds them by the request's subject token). Such a row can be re-made under the newest key only
  from the subject's external id, which the store does not keep: `suppression_rows_rekey` takes the
  ids from the operator. Rows of subjects whose ids nobody has keep their key in the ring, which
  costs one HMAC per key per check and is always safe.
- pseudonym keys: customers. Never re-keyed: apps hold customer keys, so a customer keeps the key it
  was made with for life, and the key stays in the ring until no customer has it (erasure).
Quarantined rows are left out: erasure also finds them by the identifiers in their decrypted text,
and they expire after QUARANTINE_RETENTION_DAYS.
"""

from collections import defaultdict

from django.conf import settings
from django.db import transaction
from django.db.models import Count

from ingestion.models import Customer
from ingestion.selectors import customer_key_resolve
from privacy.models import PrivacyRequest, RestrictedSubject, SuppressedSubject
from privacy.suppression_tokens import (
    customer_suppression_token, suppression_key_id, suppression_token, suppression_tokens,
)


def _rows_per_key_id(queryset, field: str = "key_id") -> dict[str, int]:
    return dict(queryset.order_by().values(field).annotate(n=Count("pk")).values_list(field, "n"))


def suppression_key_usage() -> dict[str, dict[str, int]]:
    """Key id → rows per store that depend on it (only stores with rows)."""
    usage: dict[str, dict[str, int]] = defaultdict(dict)
    for store, counts in (
        ("suppressed subjects", _rows_per_key_id(SuppressedSubject.objects)),
        ("restricted subjects", _rows_per_key_id(RestrictedSubject.objects)),
        ("access exports on disk", _rows_per_key_id(PrivacyRequest.objects.exclude(export_path=""), "subject_key_id")),
    ):
        for key_id, count in counts.items():
            usage[key_id][store] = count
    return dict(usage)


def pseudonym_key_usage() -> dict[str, dict[str, int]]:
    return {key_id: {"customers": count} for key_id, count in _rows_per_key_id(Customer.objects).items()}


def key_ids_missing_from_rings() -> list[str]:
    """One sentence per key id that rows depend on but its ring no longer has; empty when none."""
    problems = []
    for setting, ring, usage in (
        ("SUPPRESSION_KEYS", settings.SUPPRESSION_KEYS, suppression_key_usage()),
        ("PSEUDONYM_KEYS", settings.PSEUDONYM_KEYS, pseudonym_key_usage()),
    ):
        in_ring = {key_id for key_id, _ in ring}
        for key_id, stores in sorted(usage.items()):
            if key_id not in in_ring:
                rows = ", ".join(f"{count} {store}" for store, count in stores.items())
                problems.append(f"key id {key_id!r} is not in {setting} but {rows} still depend on it")
    return problems


@transaction.atomic
def suppression_rows_rekey(*, source: str, external_ids) -> dict[str, int]:
    """Re-make under the newest suppression key the rows of these subjects (external ids of one
    source) that an older key made: their list entries and their privacy requests. Idempotent.
    Each row changes in one UPDATE from one token of the subject to another, so a check running
    meanwhile matches it either way. Returns the rows re-keyed per store."""
    newest = suppression_key_id()
    counts = {"suppressed subjects": 0, "restricted subjects": 0, "privacy requests": 0}
    for external_id in sorted({str(e) for e in external_ids}):
        older = [token for token, key_id in suppression_tokens(source=source, external_id=external_id).items()
                 if key_id != newest]
        token = suppression_token(source=source, external_id=external_id)
        customer_token = customer_suppression_token(customer_key=customer_key_resolve(source=source,
                                                                                      external_id=external_id))
        for store, model in (("suppressed subjects", SuppressedSubject), ("restricted subjects", RestrictedSubject)):
            if model.objects.filter(token=token).exists():  # listed under the newest key already: a twin goes
                model.objects.filter(token__in=older).delete()
                continue
            counts[store] += model.objects.filter(token__in=older).update(
                token=token, customer_token=customer_token, key_id=newest)
        counts["privacy requests"] += PrivacyRequest.objects.filter(subject_token__in=older).update(
            subject_token=token, subject_key_id=newest)
    return counts
