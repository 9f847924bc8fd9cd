from django.core.management.base import BaseCommand

from segments import services
from segments.models import Segment

DEMO_RULES = (
    ("High-value active customers", 'value_tier = "high" and lifecycle_stage in ("active", "new")'),
    ("At-risk spenders", 'lifecycle_stage = "at_risk" and value_tier >= "medium"'),
    ("Lapsed customers", 'lifecycle_stage = "lapsed"'),
)


class Command(BaseCommand):
    help = "Create example rule segments for the demo shop (members computed in this process)."

    def add_arguments(self, parser):
        parser.add_argument("--if-missing", action="store_true", help="do nothing when the example segments exist")

    def handle(self, *args, **opts):
        # by name: the CRM audience segments a CLV fit keeps are no reason to skip the examples
        if opts["if_missing"] and Segment.objects.filter(name__in=[name for name, _ in DEMO_RULES]).exists():
            self.stdout.write("segments exist; left as they are")
            return
        for name, rule in DEMO_RULES:
            segment = services.segment_create_rule(name=name, rule=rule, refresh="none")
            size = services.segment_refresh(segment_id=segment.pk)
            self.stdout.write(f"segment #{segment.pk} {name}: {size:,} members")
