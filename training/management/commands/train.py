import traceback

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from tqdm import tqdm

from pipeline import flows
from training import services
from training.ml.config import ARCHITECTURES
from training.models import ModelVersion, RunStatus, TrainingRun
from training.tasks import training_run_queue


class Command(BaseCommand):
    help = (
        "Train a user encoder on the event store in this process, with a progress bar (the Celery task "
        "runs the same code). A version that passes the gate is activated and the profiles rebuilt."
    )

    def add_arguments(self, parser):
        parser.add_argument("--arch", choices=ARCHITECTURES, default=None, help="default: TRAINING_DEFAULT_ARCH")
        parser.add_argument("--epochs", type=int, default=None, help="default: TRAINING_EPOCHS")
        parser.add_argument("--patience", type=int, default=None)
        parser.add_argument("--max-len", type=int, default=None)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--content", action="store_true", default=None,
                            help="add item title/category vectors from the pretrained text encoder")
        parser.add_argument("--no-content", dest="content", action="store_false")
        parser.add_argument("--if-missing", action="store_true", help="do nothing when a model version is active")
        parser.add_argument("--no-rebuild", action="store_true", help="do not rebuild profiles after activation")
        parser.add_argument("--run-id", type=int, default=None,
                            help="train this pending run (what each rank runs under torchrun, see training.launch: "
                                 "rank 0 writes the registry); the other options are the run's own")
        parser.add_argument("--queue", action="store_true",
                            help="queue the run for a worker on the training queue instead of training here")

    def handle(self, *args, **opts):
        if opts["run_id"] is not None:
            return self._rank(opts["run_id"], rebuild=not opts["no_rebuild"])
        if opts["if_missing"] and (ModelVersion.objects.filter(is_active=True).exists()
                                   or TrainingRun.objects.filter(status__in=[RunStatus.PENDING, RunStatus.RUNNING]).exists()):
            self.stdout.write("a model version is active or a run is pending; nothing to do")
            return
        model = {k: opts[k] for k in ("max_len", "content") if opts[k] is not None}
        train = {"seed": opts["seed"], **{k: opts[k] for k in ("epochs", "patience") if opts[k] is not None}}
        if opts["queue"]:
            try:
                run = training_run_queue(arch=opts["arch"], config={"model": model, "train": train})
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write("a training run is already pending or running" if run is None else
                              f"training run #{run.pk} ({run.arch}) queued for a worker on the training queue")
            return
        try:
            run = services.training_run_create(arch=opts["arch"], config={"model": model, "train": train})
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"training run #{run.pk} ({run.arch})")
        bar = None

        def progress(record, epochs):
            nonlocal bar
            if bar is None:
                bar = tqdm(total=epochs, desc=f"run #{run.pk}", unit="epoch", file=self.stderr._out)
            if record is None:  # training starts
                return
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", valid_ndcg10=f"{record['valid']['ndcg@10']:.4f}")

        try:
            run, _ = flows.training_run(run_id=run.pk, progress=progress, rebuild=not opts["no_rebuild"])
        finally:
            if bar is not None:
                bar.close()
        if run is None:
            raise CommandError("the run was taken by another worker")
        self._summary(run)

    def _rank(self, run_id: int, *, rebuild: bool):
        """One rank of a data-parallel run (or the only process without torchrun). A rank's process
        ends through distributed.end_rank, status 1 with the traceback on stderr when it failed."""
        from training.ml import distributed

        here = distributed.init_from_env(timeout_s=settings.TRAINING_DIST_TIMEOUT_S)
        if here.size == 1:
            return self._rank_train(run_id, rebuild=rebuild, writer=here.writer)
        status = 1
        try:
            self._rank_train(run_id, rebuild=rebuild, writer=here.writer)
            status = 0
        except Exception:
            traceback.print_exc()
        finally:
            connections.close_all()
            distributed.end_rank(status)

    def _rank_train(self, run_id: int, *, rebuild: bool, writer: bool):
        run, _ = flows.training_run(run_id=run_id, rebuild=rebuild)
        if not writer:
            return
        if run is None:
            self.stdout.write(f"training run #{run_id} is finished or taken by another worker; nothing to do")
            return
        self._summary(run)

    def _summary(self, run):
        version = run.model_version
        self.stdout.write(
            f"run #{run.pk} {run.status} on {run.device} in {run.duration_s:.1f}s: test {run.metrics}; "
            f"version {version} {'activated' if version.is_active else 'not activated (gate: ' + str(version.gate) + ')'}"
        )
