import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from access.models import ApiToken, Scope
from access.services import api_token_create

DEMO_TOKEN_DAYS = 30


class Command(BaseCommand):
    help = "Create the first admin login and a demo API token once; print their secrets that one time."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, **opts):
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            self.stdout.write("admin login exists (reset with: manage.py changepassword admin)")
        else:
            password = secrets.token_urlsafe(12)
            users.objects.create_superuser(opts["username"], f"{opts['username']}@localhost", password)
            self.stdout.write(self.style.WARNING(
                f"admin login created: user {opts['username']!r} password {password!r} (shown once)"
            ))
        if not ApiToken.objects.filter(name="demo").exists():
            # a token printed to a terminal may end up in logs: it cannot touch privacy requests, and expires
            scopes = [scope for scope in Scope.values if scope != Scope.COMPLIANCE]
            _, raw = api_token_create(name="demo", scopes=scopes, lifetime=timedelta(days=DEMO_TOKEN_DAYS))
            self.stdout.write(self.style.WARNING(
                f"demo API token ({', '.join(scopes)}; expires in {DEMO_TOKEN_DAYS} days; shown once): {raw}"
            ))
