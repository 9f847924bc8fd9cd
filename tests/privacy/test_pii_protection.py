"""Personal data at rest: key rotation re-encrypts every token under the newest key, and only
compliance staff can reveal a customer's clear values in the admin, each reveal audited."""

import json
from io import StringIO

import pytest
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client

from ingestion import pseudonyms
from ingestion.pseudonyms import customer_key, pii_decrypt, pii_encrypt
from ingestion.models import Customer
from ingestion.pii import pii_reencrypt
from privacy.models import AuditEntry, PrivacyRequest

pytestmark = pytest.mark.django_db

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()
EMAIL, NAME, PHONE = "wang.fang@example.com", "Wang Fang", "+86 138 0000 1234"


@pytest.fixture
def pii_keys(settings):
    """Sets PII_ENCRYPTION_KEYS; the cipher built from them is cached, so it is rebuilt each time."""

    def use(*keys: str) -> None:
        settings.PII_ENCRYPTION_KEYS = list(keys)
        pseudonyms._fernet.cache_clear()

    yield use
    pseudonyms._fernet.cache_clear()


def _customer(external_id: str, **clear) -> Customer:
    return Customer.objects.create(
        key=customer_key(source="default", external_id=external_id), source="default",
        **{f"{field}_encrypted": pii_encrypt(value) for field, value in clear.items()},
    )


def _tokens() -> list[bytes]:
    customers = Customer.objects.values_list("email_encrypted", "name_encrypted", "phone_encrypted")
    requests = PrivacyRequest.objects.values_list("subject_encrypted", flat=True)
    return [bytes(t) for row in customers for t in row if t is not None] + [bytes(t) for t in requests if t is not None]


def test_reencrypt_moves_every_token_to_the_new_key_and_a_rerun_rewrites_nothing(pii_keys):
    # given customers (some fields empty) and a pending privacy request, all encrypted under the old key
    pii_keys(OLD_KEY)
    clear = {f"c{i}": {"email": f"person{i}@example.com", "name": f"Person {i}", **({"phone": f"+1 555 010{i}"} if i % 2 else {})}
             for i in range(5)}
    for external_id, values in clear.items():
        _customer(external_id, **values)
    _customer("no-pii")
    PrivacyRequest.objects.create(kind="erasure", source="default", subject_token="t" * 64,
                                  subject_encrypted=pii_encrypt("c0"), filed_by="compliance")
    # and one customer written after the new key went first: already under it
    pii_keys(NEW_KEY, OLD_KEY)
    _customer("late", email="late@example.com")
    progress = []

    # when the rotation runs in batches smaller than the table
    counts = pii_reencrypt(batch_size=2, on_progress=progress.append)

    # then every old token was rewritten (5 emails, 5 names, 2 phones, 1 request), nothing else
    assert counts == {"customers": 6, "privacy_requests": 1, "fields_reencrypted": 13}
    assert progress[-1] == counts and len(progress) == 4  # three customer batches, one request batch
    newest_only = Fernet(NEW_KEY.encode())
    old_only = Fernet(OLD_KEY.encode())
    for token in _tokens():
        newest_only.decrypt(token)
        with pytest.raises(InvalidToken):
            old_only.decrypt(token)
    # and with only the new key left, every value reads as before
    pii_keys(NEW_KEY)
    for external_id, values in clear.items():
        customer = Customer.objects.get(key=customer_key(source="default", external_id=external_id))
        assert pii_decrypt(customer.email_encrypted) == values["email"]
        assert pii_decrypt(customer.name_encrypted) == values["name"]
        assert pii_decrypt(customer.phone_encrypted) == values.get("phone")
    assert pii_decrypt(PrivacyRequest.objects.get().subject_encrypted) == "c0"

    # a rerun finds nothing left to do and leaves the tokens byte for byte
    before = _tokens()
    assert pii_reencrypt(batch_size=2)["fields_reencrypted"] == 0
    assert _tokens() == before


def test_reencrypt_keeps_a_token_written_while_it_runs(pii_keys, monkeypatch):
    """No row locks (a Citus cluster refuses them across shards): a token is rewritten only while it
    is still the one read. Here the customer's email changes between the read and the rewrite; the
    new email stays (rewriting the row read would have put the old address back)."""
    import ingestion.pii

    pii_keys(OLD_KEY)
    customer = _customer("mover", email="old@example.com", name=NAME)
    pii_keys(NEW_KEY, OLD_KEY)
    written = pii_encrypt("new@example.com")
    rotate = ingestion.pii.pii_rotate

    def rotate_after_a_write(token):
        Customer.objects.filter(pk=customer.pk).update(email_encrypted=written)
        return rotate(token)

    monkeypatch.setattr(ingestion.pii, "pii_rotate", rotate_after_a_write)

    counts = pii_reencrypt()

    customer.refresh_from_db()
    assert pii_decrypt(customer.email_encrypted) == "new@example.com"
    assert pii_decrypt(customer.name_encrypted) == NAME
    assert counts["fields_reencrypted"] == 1  # the name; the email was someone else's write


def test_reencrypt_refuses_a_token_no_configured_key_can_read(pii_keys):
    pii_keys(OLD_KEY)
    _customer("c1", email=EMAIL)
    pii_keys(NEW_KEY)  # the old key dropped before rotating

    with pytest.raises(InvalidToken):
        pii_reencrypt()

    assert MultiFernet([Fernet(OLD_KEY.encode())]).decrypt(_tokens()[0]).decode() == EMAIL


def test_reencrypt_command_prints_the_counts(pii_keys):
    pii_keys(OLD_KEY)
    _customer("c1", email=EMAIL, name=NAME)
    pii_keys(NEW_KEY, OLD_KEY)
    out = StringIO()

    call_command("reencrypt_pii", stdout=out)

    assert "1 customers and 0 privacy requests checked, 2 fields re-encrypted" in out.getvalue()


@pytest.fixture
def customer(db) -> Customer:
    return _customer("x1", email=EMAIL, name=NAME, phone=PHONE)


def _staff_client(django_user_model, group: str, *, client: Client | None = None) -> Client:
    user = django_user_model.objects.create_user(group.lower(), password="pw-for-tests-only", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    client = client or Client()
    client.force_login(user)
    return client


def _change_url(customer: Customer) -> str:
    return f"/admin/ingestion/customer/{customer.pk}/change/"


def _reveal_url(customer: Customer) -> str:
    return f"/admin/ingestion/customer/{customer.pk}/reveal/"


def _shows_clear_values(text: str) -> bool:
    return any(value in text for value in (EMAIL, NAME, PHONE, "wang.fang", "0000 1234"))


def test_operator_sees_masked_values_without_reveal_button_and_is_refused_the_reveal(django_user_model, customer):
    operator = _staff_client(django_user_model, "Operators")

    page = operator.get(_change_url(customer))
    refused = operator.post(_reveal_url(customer))

    text = page.content.decode()
    assert page.status_code == 200
    assert "w***@example.com" in text and not _shows_clear_values(text)
    assert "Reveal personal data" not in text and _reveal_url(customer) not in text
    assert refused.status_code == 403 and not _shows_clear_values(refused.content.decode())
    assert not AuditEntry.objects.filter(action="pii.revealed").exists()


def test_compliance_reveal_shows_clear_values_and_audits_once_without_personal_data(django_user_model, customer):
    compliance = _staff_client(django_user_model, "Compliance")

    page = compliance.get(_change_url(customer))
    revealed = compliance.post(_reveal_url(customer))

    text = page.content.decode()
    assert "Reveal personal data" in text and f'action="{_reveal_url(customer)}"' in text
    assert not _shows_clear_values(text)
    assert revealed.status_code == 200
    shown = revealed.content.decode()
    assert EMAIL in shown and NAME in shown and PHONE in shown
    entry = AuditEntry.objects.get(action="pii.revealed")
    assert entry.actor.username == "compliance"
    assert (entry.target_type, entry.target_id) == ("ingestion.customer", str(customer.pk))
    assert entry.details == {"fields": ["email", "name", "phone"]}
    recorded = json.dumps([entry.details, entry.target_type, entry.target_id, entry.actor_label])
    assert not _shows_clear_values(recorded) and "Wang" not in recorded
    assert "x1" not in recorded and customer.key not in recorded


def test_get_on_the_reveal_url_neither_reveals_nor_audits(django_user_model, customer):
    compliance = _staff_client(django_user_model, "Compliance")

    response = compliance.get(_reveal_url(customer))

    assert response.status_code == 405
    assert not _shows_clear_values(response.content.decode())
    assert not AuditEntry.objects.exists()


def test_reveal_without_csrf_token_is_refused(django_user_model, customer):
    compliance = _staff_client(django_user_model, "Compliance", client=Client(enforce_csrf_checks=True))

    response = compliance.post(_reveal_url(customer))

    assert response.status_code == 403
    assert not _shows_clear_values(response.content.decode())
    assert not AuditEntry.objects.exists()
