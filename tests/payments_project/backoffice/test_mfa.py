"""Staff sign-in: a password is not enough. Enrolment at the first sign-in, TOTP or a recovery code (once)
at every sign-in, passkeys through django-otp-webauthn, sessions that end when idle; all audited."""

import time
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import Group, User
from django.test import Client
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from gdpr.models import AuditEvent
from tests.support.auth import signed_in

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
PAYMENTS = "/admin/billing/payment/"


def staff(username: str = "fiona", *, role: str = "finance", superuser: bool = False) -> User:
    user = User.objects.create_user(username, password=PASSWORD, is_staff=True, is_superuser=superuser)
    user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def password_step(client: Client, username: str = "fiona", next_url: str = "/admin/") -> Any:
    return client.post(
        "/admin/login/", {"username": username, "password": PASSWORD, "next": next_url}, REMOTE_ADDR="198.51.100.7"
    )


def code_for(key_hex: str, *, steps_ahead: int = 0) -> str:
    totp = TOTP(bytes.fromhex(key_hex))
    totp.time = time.time() + 30 * steps_ahead
    return f"{totp.token():06d}"


def enrol(client: Client) -> list[str]:
    """Go through the enrolment page with the app's current code; returns the recovery codes shown."""
    page = client.get("/admin/mfa/enrol/")
    key = client.session["mfa_totp_key"]
    assert page.status_code == 200
    done = client.post("/admin/mfa/enrol/", {"otp_token": code_for(key), "next": "/admin/"})
    assert done.status_code == 200
    return list(done.context["codes"])


def test_the_first_sign_in_with_a_password_alone_leads_to_enrolment_not_to_the_admin() -> None:
    staff()
    client = Client()

    after_password = password_step(client, next_url=PAYMENTS)
    admin_page = client.get(PAYMENTS)

    assert after_password.status_code == 302
    assert admin_page.status_code == 302
    assert admin_page["Location"].startswith("/admin/mfa/enrol/?next=")
    page = client.get(admin_page["Location"])
    assert b"<svg" in page.content and "otpauth://" not in page.content.decode()  # a QR image, key as text
    assert page.context["secret"].replace(" ", "")


def test_enrolment_with_the_apps_code_signs_in_gives_recovery_codes_and_is_audited() -> None:
    user = staff()
    client = Client()
    password_step(client)

    codes = enrol(client)

    assert len(codes) == 10 and len(set(codes)) == 10
    assert client.get(PAYMENTS).status_code == 200
    device = TOTPDevice.objects.get(user=user)
    assert device.confirmed
    assert StaticDevice.objects.get(user=user).token_set.count() == 10
    enrolled = AuditEvent.objects.get(action="admin.mfa_enrolled")
    assert (enrolled.actor_type, enrolled.actor_id, enrolled.metadata) == ("staff", str(user.pk), {"method": "totp"})
    assert AuditEvent.objects.filter(action="admin.login", actor_id=str(user.pk)).count() == 1


def test_a_wrong_code_does_not_enrol() -> None:
    user = staff()
    client = Client()
    password_step(client)
    client.get("/admin/mfa/enrol/")

    page = client.post("/admin/mfa/enrol/", {"otp_token": "000000"})

    assert "did not match" in page.content.decode()
    assert not TOTPDevice.objects.filter(user=user).exists()
    assert client.get(PAYMENTS).status_code == 302


def test_every_later_sign_in_asks_for_a_code_and_only_the_right_one_opens_the_admin() -> None:
    user = staff()
    first = Client()
    password_step(first)
    enrol(first)
    key = TOTPDevice.objects.get(user=user).key

    client = Client()
    password_step(client, next_url=PAYMENTS)
    redirected = client.get(PAYMENTS)
    wrong = client.post("/admin/mfa/", {"otp_token": "123456", "next": PAYMENTS})
    throttled = client.post("/admin/mfa/", {"otp_token": code_for(key, steps_ahead=1), "next": PAYMENTS})
    with time_machine.travel(time.time() + 3):  # django-otp's throttle after one failure: 1 s
        right = client.post("/admin/mfa/", {"otp_token": code_for(key, steps_ahead=1), "next": PAYMENTS})

    assert redirected["Location"].startswith("/admin/mfa/?next=")
    assert wrong.status_code == 200 and "did not work" in wrong.content.decode()
    assert throttled.status_code == 200  # even the right code waits out the throttle
    assert (right.status_code, right["Location"]) == (302, PAYMENTS)
    assert client.get(PAYMENTS).status_code == 200
    actions = list(
        AuditEvent.objects.filter(actor_id=str(user.pk)).order_by("occurred_at", "id").values_list("action", flat=True)
    )
    assert actions[-4:] == ["admin.login", "admin.mfa_failed", "admin.mfa_failed", "admin.mfa_verified"]


def test_a_recovery_code_works_once() -> None:
    user = staff()
    codes = enrol(_past_password(Client()))

    client = _past_password(Client())
    used = client.post("/admin/mfa/", {"otp_token": codes[0].upper()})  # as typed from paper
    again = _past_password(Client()).post("/admin/mfa/", {"otp_token": codes[0]})

    assert used.status_code == 302
    assert client.get(PAYMENTS).status_code == 200
    assert again.status_code == 200  # refused
    verified = AuditEvent.objects.filter(action="admin.mfa_verified", actor_id=str(user.pk)).get()
    assert verified.metadata == {"method": "recovery_code", "recovery_codes_left": 9}


def _past_password(client: Client) -> Client:
    if not User.objects.filter(username="fiona").exists():
        staff()
    password_step(client)
    return client


def test_a_verified_staff_member_can_make_new_recovery_codes_and_the_old_ones_stop_working() -> None:
    user = staff()
    client = _past_password(Client())
    old = enrol(client)

    fresh = client.post("/admin/mfa/recovery-codes/", {"next": "/admin/mfa/devices/"}).context["codes"]

    assert set(fresh).isdisjoint(old)
    assert _past_password(Client()).post("/admin/mfa/", {"otp_token": old[1]}).status_code == 200
    assert AuditEvent.objects.filter(action="admin.recovery_codes_issued", actor_id=str(user.pk)).exists()
    assert client.get("/admin/mfa/devices/").status_code == 200


@pytest.mark.parametrize("settings_module", ["development", "production"])
def test_no_environment_lets_a_staff_session_without_a_second_factor_in(settings: Any, settings_module: str) -> None:
    """What production.py sets about sessions changes nothing here: the gate is the admin site's own."""
    if settings_module == "production":
        settings.SESSION_COOKIE_SECURE = False  # the test client speaks plain HTTP
        settings.SECURE_SSL_REDIRECT = False
    user = staff(superuser=True)
    client = Client()
    client.force_login(user)  # a password-only session, however it was made

    assert client.get("/admin/").status_code == 302
    assert client.get(PAYMENTS)["Location"].startswith("/admin/mfa/enrol/")
    assert signed_in(user).get(PAYMENTS).status_code == 200


def test_the_second_factor_pages_need_the_password_first() -> None:
    for page in ("/admin/mfa/", "/admin/mfa/enrol/", "/admin/mfa/recovery-codes/", "/admin/mfa/devices/"):
        response = Client().get(page)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_a_staff_member_between_the_two_factors_can_still_sign_out() -> None:
    staff()
    client = _past_password(Client())

    client.post("/admin/logout/")

    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="admin.logout").count() == 1


def test_an_idle_session_ends_and_any_session_ends_after_the_working_day(settings: Any) -> None:
    user = staff()
    client = signed_in(user)
    assert settings.SESSION_SAVE_EVERY_REQUEST and settings.SESSION_COOKIE_AGE == 30 * 60

    response = client.get(PAYMENTS)
    assert response.cookies["sessionid"]["max-age"] == 30 * 60  # every request pushes the idle expiry on

    session = client.session
    session["signed_in_at"] = int(time.time()) - settings.ADMIN_SESSION_MAX_SECONDS - 1
    session.save()
    expired = client.get(PAYMENTS)

    assert expired.status_code == 302 and expired["Location"].startswith("/admin/login/")
    assert "_auth_user_id" not in client.session


def test_an_unenrolled_staff_member_may_start_registering_a_passkey_but_a_stranger_may_not() -> None:
    staff()
    client = _past_password(Client())

    begin = client.post("/admin/mfa/passkeys/registration/begin/", content_type="application/json")
    stranger = Client().post("/admin/mfa/passkeys/registration/begin/", content_type="application/json")
    passwordless = Client().post("/admin/mfa/passkeys/authentication/begin/", content_type="application/json")

    assert begin.status_code == 200
    options = begin.json()
    assert options["rp"]["id"] == "localhost" and options["user"]["name"] == "fiona"
    assert stranger.status_code in (401, 403)
    assert passwordless.status_code in (401, 403)  # a passkey is a second factor only, never a sign-in


def test_an_enrolled_staff_member_must_verify_before_adding_a_passkey() -> None:
    staff()
    enrol(_past_password(Client()))
    client = _past_password(Client())

    begin = client.post("/admin/mfa/passkeys/registration/begin/", content_type="application/json")

    assert begin.status_code == 403
