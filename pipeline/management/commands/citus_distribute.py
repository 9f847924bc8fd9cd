from django.core.management.base import BaseCommand, CommandError

from pipeline.citus import CitusUnavailable, citus_distribute


class Command(BaseCommand):
    help = (
        "On the coordinator of a Citus cluster: shard the customer-keyed tables by customer (co-located), the key "
        "lookup by key, copy the reference tables to every node, and set the search defaults database-wide "
        "(docs/scale-out.md). Run after migrate; safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--shard-count", type=int, default=None,
                            help="shards per distributed table (default: Citus's citus.shard_count, 32)")

    def handle(self, *args, **opts):
        if opts["shard_count"] is not None and not 1 <= opts["shard_count"] <= 64000:
            raise CommandError("--shard-count must be from 1 to 64000")
        try:
            report = citus_distribute(shard_count=opts["shard_count"])
        except CitusUnavailable as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Citus {report.version}")
        for step in report.converted:
            how = (f"distributed by {step.column}, co-located with {step.colocate_with}" if step.kind == "distributed"
                   else "reference table")
            self.stdout.write(f"  {step.table}: {how}")
        if report.already:
            self.stdout.write(f"  already in place: {', '.join(report.already)}")
        if report.triggers_dropped:
            self.stdout.write(f"  single-node triggers dropped (Citus refuses the update itself): {', '.join(report.triggers_dropped)}")
        if report.foreign_keys_restored:
            self.stdout.write(f"  foreign keys re-created: {len(report.foreign_keys_restored)}")
        self.stdout.write("  database settings: " + ", ".join(f"{k} = {v}" for k, v in report.settings.items()))
        self.stdout.write(self.style.SUCCESS(
            f"{len(report.converted)} tables converted, {len(report.already)} already in place"))
