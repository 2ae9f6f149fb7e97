"""The admin as staff use it, in headless Chromium against a live server: enrolment and sign-in with TOTP
(and a passkey), a partial refund through the confirmation page, what support may not do, lockouts, and
the finance dashboard."""

import time
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone
from django_otp.oath import TOTP
from selenium.webdriver.common.by import By
from selenium.webdriver.common.virtual_authenticator import Protocol, Transport, VirtualAuthenticatorOptions
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from billing.models import Payment, Refund
from gdpr.models import AuditEvent
from tests.billing.factories import PaymentFactory, PriceFactory, RefundFactory, SubscriptionFactory
from tests.browser.conftest import WAIT_SECONDS, plant_session, screenshot, wait_for, wait_until_gone
from tests.support.auth import signed_in

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"


def staff(username: str, role: str) -> User:
    user = User.objects.create_user(username, password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def type_password(driver: WebDriver, base_url: str, username: str, password: str = PASSWORD) -> None:
    driver.get(f"{base_url}/admin/login/")
    wait_for(driver, "#id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(password)
    form = driver.find_element(By.ID, "login-form")
    form.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # The answer must arrive before the next page is asked for: a navigation started earlier cancels the POST.
    wait_until_gone(driver, form)


def current_code(secret_b32: str, *, steps_ahead: int = 0) -> str:
    from base64 import b32decode

    totp = TOTP(b32decode(secret_b32.replace(" ", "")))
    totp.time = time.time() + 30 * steps_ahead
    return f"{totp.token():06d}"


def test_first_sign_in_enrols_totp_and_the_next_sign_in_asks_for_a_code(browser: WebDriver, live_server: Any) -> None:
    user = staff("fiona", "finance")

    type_password(browser, live_server.url, "fiona")
    secret = wait_for(browser, "#mfa-secret").text
    browser.find_element(By.ID, "id_otp_token").send_keys(current_code(secret))
    browser.find_element(By.CSS_SELECTOR, "#mfa-enrol-form input[type=submit]").click()
    codes = [li.text for li in wait_for(browser, "#recovery-codes").find_elements(By.TAG_NAME, "li")]
    browser.find_element(By.ID, "mfa-continue").click()
    wait_for(browser, "#dashboard")
    sign_out = browser.find_element(By.CSS_SELECTOR, "#logout-form button, #logout-form input[type=submit]")
    sign_out.click()
    # As in type_password: the sign-out POST must be answered before the login page is asked for, or that
    # navigation cancels it and the still signed-in user is sent past the login form (seen once in CI).
    wait_until_gone(browser, sign_out)

    type_password(browser, live_server.url, "fiona")
    wait_for(browser, "#mfa-verify-form")
    browser.find_element(By.ID, "id_otp_token").send_keys(current_code(secret, steps_ahead=1))
    browser.find_element(By.CSS_SELECTOR, "#mfa-verify-form input[type=submit]").click()

    wait_for(browser, "#dashboard")
    assert len(codes) == 10
    actions = set(AuditEvent.objects.filter(actor_id=str(user.pk)).values_list("action", flat=True))
    assert {"admin.login", "admin.mfa_enrolled", "admin.mfa_verified", "admin.logout"} <= actions


def test_a_passkey_registered_in_the_browser_signs_in_as_the_second_factor(
    browser: WebDriver, live_server: Any, settings: Any
) -> None:
    settings.OTP_WEBAUTHN_ALLOWED_ORIGINS = [live_server.url]
    staff("fiona", "finance")
    authenticator = VirtualAuthenticatorOptions()
    authenticator.protocol = Protocol.CTAP2
    authenticator.transport = Transport.INTERNAL
    authenticator.has_resident_key = True
    authenticator.has_user_verification = True
    authenticator.is_user_verified = True
    browser.add_virtual_authenticator(authenticator)

    type_password(browser, live_server.url, "fiona")
    wait_for(browser, "#passkey-register-button").click()
    WebDriverWait(browser, WAIT_SECONDS).until(lambda d: "/admin/mfa/recovery-codes/" in d.current_url)
    assert len(wait_for(browser, "#recovery-codes").find_elements(By.TAG_NAME, "li")) == 10
    browser.delete_all_cookies()

    type_password(browser, live_server.url, "fiona")
    wait_for(browser, "#passkey-verification-button").click()

    wait_for(browser, "#dashboard")
    verified = AuditEvent.objects.filter(action="admin.mfa_verified").values_list("metadata", flat=True)
    assert list(verified) == [{"method": "passkey"}]


def test_finance_refunds_12_99_through_the_confirmation_page_and_12_comma_99_is_refused(
    browser: WebDriver, live_server: Any, payment: Payment
) -> None:
    plant_session(browser, live_server.url, signed_in(staff("anna", "finance")))
    browser.get(f"{live_server.url}/admin/billing/payment/{payment.id}/change/")
    wait_for(browser, "#refund-link").click()

    wait_for(browser, "#id_amount").send_keys("12,99")
    browser.find_element(By.NAME, "_review").click()
    assert "use a dot for decimals" in wait_for(browser, ".errorlist").text
    assert not browser.find_elements(By.ID, "refund-confirm")

    amount = browser.find_element(By.ID, "id_amount")
    amount.clear()
    amount.send_keys("12.99")
    browser.find_element(By.NAME, "_review").click()
    assert wait_for(browser, "#refund-amount").text == "12.99 EUR"
    assert browser.find_element(By.ID, "refund-left-after").text == "37.01 EUR"
    screenshot(browser, "refund-confirmation")
    assert Refund.objects.count() == 0
    browser.find_element(By.NAME, "_confirm").click()

    row = wait_for(browser, "#result_list tbody tr")
    refund = Refund.objects.get()
    assert (refund.amount, refund.status) == (1299, "succeeded")
    assert str(refund.id) in row.text and "12.99 EUR" in row.text


def test_support_sees_no_refund_action_and_gets_403_posting_it(browser: WebDriver, live_server: Any) -> None:
    payment = PaymentFactory()
    plant_session(browser, live_server.url, signed_in(staff("sam", "support")))
    browser.get(f"{live_server.url}/admin/billing/payment/")

    wait_for(browser, "#result_list")
    actions = [o.get_attribute("value") for s in browser.find_elements(By.NAME, "action") for o in Select(s).options]
    status = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const token = document.querySelector("[name=csrfmiddlewaretoken]")?.value
            || document.cookie.split("; ").find(c => c.startsWith("csrftoken=")).split("=")[1];
        const body = new URLSearchParams({
            csrfmiddlewaretoken: token,
            action: "refund_payment", _selected_action: arguments[0]});
        fetch(window.location.pathname, {method: "POST", body, credentials: "same-origin"}).then(r => done(r.status));
        """,
        str(payment.id),
    )

    assert "refund_payment" not in actions
    assert status == 403
    assert Refund.objects.count() == 0


def test_five_wrong_passwords_lock_the_username_not_a_colleague_on_the_same_address(
    browser: WebDriver, live_server: Any
) -> None:
    staff("fiona", "finance")
    staff("greg", "finance")

    for _ in range(5):
        type_password(browser, live_server.url, "fiona", "wrong")
    type_password(browser, live_server.url, "fiona")
    locked = wait_for(browser, "#locked-out").text
    type_password(browser, live_server.url, "greg")

    assert "locked" in locked
    wait_for(browser, "#mfa-enrol-form")  # greg got past the password: on to his second factor
    assert AuditEvent.objects.filter(action="admin.locked_out").exists()


def test_the_dashboard_renders_with_data(browser: WebDriver, live_server: Any) -> None:
    now = timezone.now()
    for days_ago in range(30):
        for _ in range((days_ago * 7) % 5 + 1):
            PaymentFactory(created_at=now - timedelta(days=days_ago, hours=1), amount=1299 + days_ago * 100)
    for days_ago in (1, 4, 9, 16):
        RefundFactory(
            created_at=now - timedelta(days=days_ago), payment=PaymentFactory(created_at=now - timedelta(days=40))
        )
    family = PriceFactory(plan__code="family", unit_amount=1299)
    SubscriptionFactory.create_batch(3, price=family)
    SubscriptionFactory(
        price__plan__code="solo", price__unit_amount=9900, price__currency="usd", price__interval="year"
    )
    plant_session(browser, live_server.url, signed_in(staff("anna", "finance")))

    browser.get(f"{live_server.url}/admin/")

    wait_for(browser, "#dashboard")
    bars = browser.find_elements(By.CSS_SELECTOR, "#dashboard-money svg rect.payments")
    assert len(bars) == 30 and all(float(bar.get_attribute("height") or 0) > 0 for bar in bars)
    assert "family" in browser.find_element(By.ID, "dashboard-subscriptions").text
    assert "Dead webhook events" in browser.find_element(By.ID, "dashboard-attention").text
    screenshot(browser, "dashboard")
