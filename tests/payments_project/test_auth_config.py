"""Identity settings the production guard refuses: no empty, short or unusable keys, no open /internal/."""

import pytest

from payments_project.settings.guard import production_problems
from tests.payments_project.test_settings_guard import SECURE


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"JWT_SIGNING_KEY": "only-twenty-bytes..."}, "JWT_SIGNING_KEY is shorter than 32 bytes"),
        ({"JWT_ALGORITHM": "none"}, "JWT_ALGORITHM must be one of"),
        ({"JWT_ALGORITHM": "ES512", "JWT_JWKS_URL": "https://id/jwks"}, "JWT_ALGORITHM must be one of"),
        ({"JWT_ALGORITHM": "RS256", "JWT_JWKS_URL": "http://id/jwks"}, "JWT_JWKS_URL must be an https:// URL"),
        ({"SERVICE_AUTH_MODE": "mock"}, "SERVICE_AUTH_MODE must be one of"),
        ({"SERVICE_AUTH_MODE": "xfcc", "SPIFFE_TRUST_DOMAIN": "jia.prod"}, "SPIFFE_TRUST_BUNDLE"),
        ({"SERVICE_AUTH_MODE": "xfcc", "SPIFFE_TRUST_BUNDLE": "/run/spiffe/bundle.pem"}, "SPIFFE_TRUST_DOMAIN"),
        ({"TRUSTED_PROXY_COUNT": -1}, "TRUSTED_PROXY_COUNT"),
    ],
)
def test_the_guard_names_each_unsafe_identity_setting(change: dict[str, object], named: str) -> None:
    problems = production_problems({**SECURE, **change})

    assert len(problems) == 1, problems
    assert named in problems[0]


@pytest.mark.parametrize("algorithm", ["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"])
def test_each_asymmetric_algorithm_is_accepted_with_a_verifying_key(algorithm: str) -> None:
    settings = {**SECURE, "JWT_ALGORITHM": algorithm, "JWT_SIGNING_KEY": "", "JWT_VERIFYING_KEY": "-----BEGIN..."}

    assert production_problems(settings) == []


def test_the_sidecar_mode_is_accepted_with_a_bundle_and_a_trust_domain() -> None:
    settings = {
        **SECURE,
        "SERVICE_AUTH_MODE": "xfcc",
        "SPIFFE_TRUST_BUNDLE": "/run/spiffe/bundle.pem",
        "SPIFFE_TRUST_DOMAIN": "jia.prod",
    }

    assert production_problems(settings) == []
