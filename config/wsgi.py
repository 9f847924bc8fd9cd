import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

from config.statement_timeout import web_statement_timeout_install  # noqa: E402 (needs the settings loaded)

web_statement_timeout_install()
