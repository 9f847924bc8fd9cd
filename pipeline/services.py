"""Writes of the pipeline app: dead letters of tasks given up on."""

from pipeline.models import DeadLetter


def dead_letter_record(*, task_id: str, task_name: str, args: list, kwargs: dict, error: str,
                       deliveries: int) -> DeadLetter:
    """Record (or, for the same task id, update) a task given up on."""
    letter, _ = DeadLetter.objects.update_or_create(
        task_id=task_id,
        defaults={"task_name": task_name[:200], "args": args, "kwargs": kwargs, "error": error[:10_000],
                  "deliveries": deliveries},
    )
    return letter


def dead_letters_delete(*, ids: list[int]) -> int:
    """Operators resolved these (fixed the cause, re-ran the work): forget them."""
    return DeadLetter.objects.filter(pk__in=ids).delete()[0]
