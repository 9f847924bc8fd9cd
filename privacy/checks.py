"""System check: no key leaves its ring while stored rows depend on it (privacy.key_rotation).

Registered as a database check, so `manage.py migrate` (every deploy) and `manage.py check
--database default` stop with the key id and the row counts, before an erased subject is silently
un-suppressed or a customer split in two."""

from django.core.checks import Error, Tags, register
from django.db import DatabaseError

from privacy.key_rotation import key_ids_missing_from_rings


@register(Tags.database)
def key_rings_cover_stored_rows(app_configs=None, databases=None, **kwargs) -> list[Error]:
    if not databases:
        return []
    try:
        problems = key_ids_missing_from_rings()
    except DatabaseError:  # before the migration that adds the key id columns: nothing depends on a key id yet
        return []
    return [Error(problem, hint="Put the key back in its ring (README 'Rotating keys').", id="privacy.E001")
            for problem in problems]
