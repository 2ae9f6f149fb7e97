"""Sign-in lockouts (django-axes): per username and, with a higher limit, per client IP; visible in admin,
lifted by a superuser; lockouts and unlocks audited. (They replaced the per-IP `admin_login` rate limit.)"""

from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import Group, User
from django.test import Client

from gdpr.models import AuditEvent
from tests.support.auth import signed_in

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
OFFICE = "198.51.100.20"
ATTEMPTS = "/admin/axes/accessattempt/"


def staff(username: str, *roles: str, superuser: bool = False) -> User:
    user = User.objects.create_user(username, password=PASSWORD, is_staff=True, is_superuser=superuser)
    for role in roles:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def sign_in(username: str, password: str = PASSWORD, ip: str = OFFICE) -> Any:
    return Client().post(
        "/admin/login/", {"username": username, "password": password, "next": "/admin/"}, REMOTE_ADDR=ip
    )


def test_five_wrong_passwords_lock_the_username_but_not_a_colleague_at_the_same_address() -> None:
    staff("fiona", "finance")
    staff("greg", "finance")

    failures = [sign_in("fiona", "wrong").status_code for _ in range(5)]
    locked = sign_in("fiona")  # the right password, too late
    elsewhere = sign_in("fiona", ip="203.0.113.9")  # the username is locked wherever it comes from
    colleague = sign_in("greg")

    assert failures == [200, 200, 200, 200, 429]  # the form again with an error, then the lockout page
    assert locked.status_code == 429 and b"locked" in locked.content
    assert elsewhere.status_code == 429
    assert colleague.status_code == 302
    lockouts = AuditEvent.objects.filter(action="admin.locked_out")
    assert lockouts.count() >= 1
    assert lockouts.first().personal.metadata == {"username": "fiona"}  # the name beside the chain, not in it


def test_twenty_failures_from_one_address_lock_the_address_for_every_username() -> None:
    staff("greg", "finance")

    for n in range(20):
        sign_in(f"guess{n}", "wrong")
    from_there = sign_in("greg")
    from_elsewhere = sign_in("greg", ip="203.0.113.9")

    assert from_there.status_code == 429
    assert from_elsewhere.status_code == 302


def test_nineteen_failures_from_one_address_still_let_others_in() -> None:
    staff("greg", "finance")

    for n in range(19):
        sign_in(f"guess{n}", "wrong")

    assert sign_in("greg").status_code == 302


def test_attempts_are_visible_to_compliance_and_only_a_superuser_unlocks_audited() -> None:
    staff("fiona", "finance")
    root = staff("root", superuser=True)
    carla = staff("carla", "compliance")
    for _ in range(5):
        sign_in("fiona", "wrong")
    attempt = AccessAttempt.objects.get(username="fiona")
    assert sign_in("fiona").status_code == 429

    listing = signed_in(carla).get(ATTEMPTS)
    refused = signed_in(carla).post(ATTEMPTS, {"action": "unlock_usernames", "_selected_action": [attempt.pk]})
    assert listing.status_code == 200 and b"fiona" in listing.content
    assert b"unlock_usernames" not in listing.content
    assert refused.status_code in (200, 302) and AccessAttempt.objects.filter(username="fiona").exists()

    unlocked = signed_in(root).post(ATTEMPTS, {"action": "unlock_usernames", "_selected_action": [attempt.pk]})

    assert unlocked.status_code == 302
    assert not AccessAttempt.objects.filter(username="fiona").exists()
    assert sign_in("fiona").status_code == 302
    event = AuditEvent.objects.get(action="admin.unlocked")
    assert (event.actor_id, event.target_type, event.personal.metadata) == (
        str(root.pk),
        "admin_account",
        {"username": "fiona"},
    )


def test_a_superuser_unlocks_an_address() -> None:
    staff("greg", "finance")
    root = staff("root", superuser=True)
    for n in range(20):
        sign_in(f"guess{n}", "wrong")
    attempt = AccessAttempt.objects.filter(ip_address=OFFICE).first()

    signed_in(root).post(ATTEMPTS, {"action": "unlock_addresses", "_selected_action": [attempt.pk]})

    assert sign_in("greg").status_code == 302
    assert AuditEvent.objects.get(action="admin.unlocked").personal.metadata == {"ip": OFFICE}


def test_the_attempt_page_never_shows_what_was_typed() -> None:
    staff("fiona", "finance")
    sign_in("fiona", "hunter2-secret")
    root = staff("root", superuser=True)
    attempt = AccessAttempt.objects.get(username="fiona")

    page = signed_in(root).get(f"{ATTEMPTS}{attempt.pk}/change/")

    assert page.status_code == 200
    assert b"hunter2" not in page.content


def test_the_hand_written_admin_login_limit_is_gone(settings: Any) -> None:
    assert "admin_login" not in settings.RATE_LIMITS
