from django.core.management.base import BaseCommand, CommandError

from training import services
from training.ml.config import ARCHITECTURES


class Command(BaseCommand):
    help = "Train a user encoder on the event store in this process (the Celery task runs the same code)."

    def add_arguments(self, parser):
        parser.add_argument("--arch", choices=ARCHITECTURES, default="transformer")
        parser.add_argument("--epochs", type=int, default=30)
        parser.add_argument("--dim", type=int, default=64)
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, **opts):
        run = services.training_run_create(
            arch=opts["arch"],
            config={"model": {"dim": opts["dim"]}, "train": {"epochs": opts["epochs"], "seed": opts["seed"]}},
        )
        self.stdout.write(f"training run #{run.pk} ({opts['arch']})")
        run = services.training_run_execute(run_id=run.pk)
        if run is None:
            raise CommandError("the run was taken by another worker")
        version = run.model_version
        self.stdout.write(
            f"run #{run.pk} {run.status} on {run.device} in {run.duration_s:.1f}s: test {run.metrics}; "
            f"version {version} {'activated' if version.is_active else 'not activated (gate: ' + str(version.gate) + ')'}"
        )
