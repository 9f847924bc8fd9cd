"""The browser's middleware, passed by for the token APIs.

Sessions, Django's user, its second factor and flash messages serve the admin, which a person uses in a
browser. A request to the token APIs (/api/v1/, and the Segment-Spec source at /v1/) is authenticated by
its token in DRF and reads none of them, yet went through all four: 0.10-0.14 ms of a 2.7-3.3 ms request,
measured in one process with the two chains alternated request by request (issue 20). Each class here is
a subclass of Django's (or django-otp's) own, so the admin's checks find it, and passes a request on
untouched when its path is under API_PREFIXES. CSRF stays as it is (DRF's views are exempt already; its
check is a hook the handler calls on its own), and so does django-axes' middleware (its check wants
its own name in MIDDLEWARE; wrapping it measured no gain beyond the noise)."""

from django.contrib.auth.middleware import AuthenticationMiddleware as _AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware as _MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware as _SessionMiddleware
from django_otp.middleware import OTPMiddleware as _OTPMiddleware

API_PREFIXES = ("/api/v1/", "/v1/")


class _PassedByForTheApis:
    def __call__(self, request):
        if request.path_info.startswith(API_PREFIXES):
            return self.get_response(request)
        return super().__call__(request)


class SessionMiddleware(_PassedByForTheApis, _SessionMiddleware):
    pass


class AuthenticationMiddleware(_PassedByForTheApis, _AuthenticationMiddleware):
    pass


class OTPMiddleware(_PassedByForTheApis, _OTPMiddleware):
    pass


class MessageMiddleware(_PassedByForTheApis, _MessageMiddleware):
    pass
