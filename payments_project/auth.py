"""Client identity: a Bearer JWT from the identity provider, verified statelessly (no user table lookup).

Everything about verification comes from settings, nothing from the token:
- the algorithm is JWT_ALGORITHM; a token whose header names another (`none`, or HS256 against an RSA
  key: "algorithm confusion") is refused before any key is touched;
- HS256/384/512 verify with JWT_SIGNING_KEY (at least 32 bytes; an empty key refuses every token);
  RS256/384/512, ES256/384 and EdDSA with JWT_VERIFYING_KEY (a PEM public key or a JWK) or with the
  key set at JWT_JWKS_URL, chosen by the token's `kid` (payments_project/jwks.py: cached, refreshed by
  one request at a time, served stale while the endpoint fails). Token headers such as `jku`, `x5u` or
  `jwk` are never followed;
- `exp` and `sub` are required, `nbf`/`iat` honoured, `iss`/`aud` required and checked when configured
  (the production guard makes them mandatory), with JWT_LEEWAY_SECONDS of clock skew;
- `sub` must be a UUID: it is the user's id everywhere.

A verified token's claims are remembered by the token's sha256 (an ExpiringLRU of
JWT_VERIFIED_TOKENS_CACHED per process) until its `exp` (plus the leeway, exactly when PyJWT would start
refusing it) and, with a JWKS, for at most JWT_JWKS_CACHE_SECONDS (the time a key withdrawn from the set
could be used anyway): a repeated token skips the signature check and nothing else changes. Only
tokens that passed every rule are remembered; the cache belongs to the backend, so a settings change
forgets it.
"""

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NoReturn, cast

import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import HTTP_HEADER_ENCODING, exceptions
from rest_framework_simplejwt.authentication import JWTStatelessUserAuthentication
from rest_framework_simplejwt.exceptions import TokenBackendError, TokenError
from rest_framework_simplejwt.exceptions import TokenBackendExpiredToken as TokenExpired
from rest_framework_simplejwt.models import TokenUser
from rest_framework_simplejwt.tokens import Token

from payments_project.jwks import JwksKeys, JwksPolicy, UnknownKey
from payments_project.lru import ExpiringLRU

log = structlog.get_logger(__name__)

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"})
SUPPORTED_ALGORITHMS = HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS
MIN_HMAC_KEY_BYTES = 32
MAX_TOKEN_LENGTH = 8192

_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1}


def _key_fits(algorithm: str, key: Any) -> bool:
    """Whether a public key object is of the family the configured algorithm needs."""
    if algorithm.startswith("RS"):
        return isinstance(key, rsa.RSAPublicKey)
    if algorithm in _CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _CURVES[algorithm])
    if algorithm == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


def _load_public_key(algorithm: str, text: str) -> Any:
    """JWT_VERIFYING_KEY: a PEM public key, or one public JWK (JSON)."""
    try:
        if text.lstrip().startswith("{"):
            jwk = jwt.PyJWK(json.loads(text))
            if jwk.algorithm_name not in (algorithm, None) and "alg" in json.loads(text):
                raise ValueError(f"the JWK is for {jwk.algorithm_name}")
            key = jwk.key
        else:
            key = serialization.load_pem_public_key(text.encode())
    except (ValueError, TypeError, jwt.PyJWKError) as exc:
        raise ImproperlyConfigured(f"JWT_VERIFYING_KEY is not a usable public key: {exc}") from exc
    if not _key_fits(algorithm, key):
        raise ImproperlyConfigured(f"JWT_VERIFYING_KEY is not a public key for {algorithm}")
    return key


@dataclass(frozen=True)
class _Config:
    algorithm: str
    signing_key: str
    verifying_key: str
    jwks_url: str
    issuer: str
    audience: str
    leeway: int
    jwks_cache_seconds: float
    jwks_cooldown_seconds: float
    jwks_timeout_seconds: float
    jwks_max_stale_seconds: float

    @classmethod
    def from_settings(cls) -> "_Config":
        return cls(
            algorithm=settings.JWT_ALGORITHM,
            signing_key=settings.JWT_SIGNING_KEY,
            verifying_key=settings.JWT_VERIFYING_KEY,
            jwks_url=settings.JWT_JWKS_URL,
            issuer=settings.JWT_ISSUER,
            audience=settings.JWT_AUDIENCE,
            leeway=settings.JWT_LEEWAY_SECONDS,
            jwks_cache_seconds=settings.JWT_JWKS_CACHE_SECONDS,
            jwks_cooldown_seconds=settings.JWT_JWKS_REFRESH_COOLDOWN_SECONDS,
            jwks_timeout_seconds=settings.JWT_JWKS_TIMEOUT_SECONDS,
            jwks_max_stale_seconds=settings.JWT_JWKS_MAX_STALE_SECONDS,
        )


_REFUSALS: tuple[tuple[type[jwt.InvalidTokenError], str], ...] = (
    (jwt.InvalidSignatureError, "The token's signature is invalid"),
    (jwt.InvalidAudienceError, "The token is for another audience"),
    (jwt.InvalidIssuerError, "The token is from another issuer"),
    (jwt.ImmatureSignatureError, "The token is not valid yet"),
    (jwt.InvalidIssuedAtError, "The token's issue time is invalid"),
    (jwt.DecodeError, "The token is malformed"),
)


def _refusal(exc: jwt.InvalidTokenError) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"The token lacks the required '{exc.claim}' claim"  # one of our required names
    for kind, message in _REFUSALS:
        if isinstance(exc, kind):
            return message
    return "The token is invalid"


class ClientTokenBackend:
    """Verifies client JWTs; built once from settings (rebuilt when tests override them)."""

    def __init__(self, config: _Config) -> None:
        self.config = config
        algorithm = config.algorithm
        if algorithm not in SUPPORTED_ALGORITHMS:
            raise ImproperlyConfigured(
                f"JWT_ALGORITHM must be one of {', '.join(sorted(SUPPORTED_ALGORITHMS))}, not {algorithm!r}"
            )
        self.jwks: JwksKeys | None = None
        self.static_key: Any = None
        self.verified: ExpiringLRU[dict[str, Any]] = ExpiringLRU(settings.JWT_VERIFIED_TOKENS_CACHED)
        # By the Authorization header's sha256, until the same deadline: JWTAuthentication.remembered_principal.
        self.principals: ExpiringLRU[Principal] = ExpiringLRU(settings.JWT_VERIFIED_TOKENS_CACHED)
        if algorithm in HMAC_ALGORITHMS:
            if len(config.signing_key.encode()) < MIN_HMAC_KEY_BYTES:
                raise ImproperlyConfigured(
                    f"JWT_SIGNING_KEY must be at least {MIN_HMAC_KEY_BYTES} bytes for {algorithm}"
                )
            # PyJWT refuses PEM/SSH-looking HMAC secrets: a public key can never become the HMAC secret.
            try:
                self.static_key = jwt.get_algorithm_by_name(algorithm).prepare_key(config.signing_key)
            except jwt.InvalidKeyError as exc:
                raise ImproperlyConfigured(f"JWT_SIGNING_KEY is not usable as an HMAC secret: {exc}") from exc
        elif config.jwks_url:
            self.jwks = JwksKeys(
                JwksPolicy(
                    url=config.jwks_url,
                    cache_seconds=max(0, config.jwks_cache_seconds),
                    max_stale_seconds=config.jwks_max_stale_seconds,
                    cooldown_seconds=max(0, config.jwks_cooldown_seconds),
                    timeout_seconds=config.jwks_timeout_seconds,
                )
            )
        elif config.verifying_key:
            self.static_key = _load_public_key(algorithm, config.verifying_key)
        else:
            raise ImproperlyConfigured(f"JWT_VERIFYING_KEY or JWT_JWKS_URL is required for {algorithm}")

    def _key_for(self, raw: str, header: dict[str, Any]) -> Any:
        if self.jwks is None:
            return self.static_key
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenBackendError("The token names no key (kid)")
        try:
            jwk = self.jwks.signing_key(kid)  # KeysUnavailable (503) passes through: the token may be fine
        except UnknownKey as exc:
            raise TokenBackendError("The token's key is unknown") from exc
        declared = jwk._jwk_data.get("alg")
        if declared not in (None, self.config.algorithm) or not _key_fits(self.config.algorithm, jwk.key):
            raise TokenBackendError("The token's key is not a key for the configured algorithm")
        return jwk.key

    def decode(self, token: bytes | str, verify: bool = True) -> dict[str, Any]:
        if not verify:
            raise TokenBackendError("Unverified decoding is not supported")
        try:
            raw = token.decode("ascii") if isinstance(token, bytes) else token.encode("ascii").decode()
        except UnicodeError as exc:  # a JWT is base64url and dots: ASCII only
            raise TokenBackendError("The token is malformed") from exc
        if len(raw) > MAX_TOKEN_LENGTH:
            raise TokenBackendError("The token is too long")
        digest = hashlib.sha256(raw.encode("ascii")).digest()
        claims = self.verified.get(digest)
        if claims is None:
            claims = self._verify(raw)
            self.verified.put(digest, dict(claims), self._deadline(claims))
        return dict(claims)  # a copy: callers never change what the next request sees

    def _deadline(self, claims: dict[str, Any]) -> float:
        """Until when (epoch seconds) a verified token may be answered from memory."""
        deadline = float(claims["exp"]) + self.config.leeway  # PyJWT: expired once now > exp + leeway
        if self.jwks is not None:
            deadline = min(deadline, time.time() + self.config.jwks_cache_seconds)
        return deadline

    def _verify(self, raw: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(raw)
        except jwt.InvalidTokenError as exc:
            raise TokenBackendError("The token is malformed") from exc
        if header.get("alg") != self.config.algorithm:
            raise TokenBackendError("The token's algorithm is not the configured one")
        required = ["exp", "sub"]
        if self.config.issuer:
            required.append("iss")
        if self.config.audience:
            required.append("aud")
        try:
            return jwt.decode(
                raw,
                self._key_for(raw, header),
                algorithms=[self.config.algorithm],
                issuer=self.config.issuer or None,
                audience=self.config.audience or None,
                leeway=self.config.leeway,
                options={"require": required, "verify_aud": bool(self.config.audience)},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired("Token is expired") from exc
        except jwt.InvalidTokenError as exc:
            # PyJWT's own words stay in the log; the client reads ours (chosen by the error's type).
            log.info("jwt_refused", reason=type(exc).__name__, error=str(exc))
            raise TokenBackendError(_refusal(exc)) from exc

    def encode(self, payload: dict[str, Any]) -> NoReturn:
        raise TokenBackendError("This service verifies tokens; it does not issue them")


_backend: ClientTokenBackend | None = None


def client_token_backend() -> ClientTokenBackend:
    global _backend
    if _backend is None:
        _backend = ClientTokenBackend(_Config.from_settings())
    return _backend


@receiver(setting_changed)
def _reset_backend(*, setting: str, **kwargs: Any) -> None:
    global _backend
    if setting.startswith("JWT_"):
        _backend = None


class ClientToken(Token):
    """A client's access token, verified by ClientTokenBackend (PyJWT has checked every claim)."""

    token_type = "access"  # noqa: S105 - a token kind, not a secret
    lifetime = None  # never minted here

    def __init__(self, token: Any = None, verify: bool = True) -> None:
        if token is None:
            raise TokenError("ClientToken only wraps tokens from the identity provider")
        self.token = token
        try:
            self.payload = client_token_backend().decode(token, verify=verify)
        except TokenExpired as exc:
            raise TokenError("Token is expired") from exc
        except TokenBackendError as exc:
            raise TokenError(str(exc.args[0]) if exc.args else "Token is invalid") from exc
        except ImproperlyConfigured as exc:  # an empty or unusable key must refuse, never accept
            log.error("jwt_misconfigured", error=str(exc))
            raise TokenError("Token verification is not configured") from exc

    def verify(self) -> None:  # everything was verified in decode
        return None

    def get_token_backend(self) -> ClientTokenBackend:  # type: ignore[override]
        return client_token_backend()


class Principal(TokenUser):
    """The caller, as the token describes them: `id` is the UUID `sub`. Never staff, never superuser."""

    is_staff = False
    is_superuser = False

    @cached_property
    def id(self) -> uuid.UUID:  # type: ignore[override]
        return uuid.UUID(str(self.token["sub"]))

    @cached_property
    def pk(self) -> uuid.UUID:  # type: ignore[override]
        return self.id

    @cached_property
    def email(self) -> str:
        """The `email` claim as the token says it: unverified, so never a key to anyone's personal data."""
        return str(self.token.get("email", ""))

    @cached_property
    def verified_email(self) -> str:
        """The `email` claim when the identity provider vouches for it (`email_verified` is JSON true), else "".
        Only this may match personal data (API.md, "Personal data")."""
        return self.email if self.token.get("email_verified") is True else ""

    @cached_property
    def scopes(self) -> frozenset[str]:
        scope = self.token.get("scope", "")
        listed = self.token.get("scp", [])
        names = str(scope).split() if isinstance(scope, str) else []
        if isinstance(listed, list):
            names += [str(name) for name in listed]
        return frozenset(names)

    @cached_property
    def username(self) -> str:
        return str(self.id)

    def __getattr__(self, attr: str) -> NoReturn:
        # TokenUser would answer any attribute from the token's claims; a claim must not pose as one.
        raise AttributeError(attr)

    def __str__(self) -> str:
        return f"Principal {self.id}"


class InvalidToken(exceptions.AuthenticationFailed):
    """401: the token was presented and refused (simplejwt's own wraps its detail in a dict)."""

    default_detail = "The token is invalid"
    default_code = "token_not_valid"


class JWTAuthentication(JWTStatelessUserAuthentication):
    """Bearer JWT; the algorithm and keys come from settings, never from the token."""

    def get_validated_token(self, raw_token: bytes) -> Token:
        try:
            return ClientToken(raw_token)
        except TokenError as exc:
            raise InvalidToken(str(exc.args[0]) if exc.args else "Token is invalid") from exc

    def get_raw_token(self, header: bytes) -> bytes | None:
        parts = header.split()
        if not parts:
            return None
        if parts[0].lower() != b"bearer":
            return None  # another scheme: unauthenticated (401 where authentication is required)
        if len(parts) != 2:
            raise InvalidToken("The Authorization header must be 'Bearer <token>'")
        return parts[1]

    def remembered_principal(self, request: HttpRequest) -> Principal | None:
        """authenticate()'s principal, remembered by the Authorization header's sha256 until the token's
        deadline (as verified tokens are): for a view that only reads it (the hot entitlement check), where
        building the token and the principal again cost more CPU than the check. None: no Bearer token
        (authenticate raises for a refused one, as before; nothing refused is remembered)."""
        header = request.META.get("HTTP_AUTHORIZATION")
        if not isinstance(header, str) or not header:
            return None
        backend = client_token_backend()
        digest = hashlib.sha256(header.encode(HTTP_HEADER_ENCODING)).digest()
        principal = backend.principals.get(digest)
        if principal is not None:
            structlog.contextvars.bind_contextvars(user_id=principal.token["sub"])  # as get_user does
            return principal
        found = self.authenticate(request)  # type: ignore[arg-type]
        if found is None:
            return None
        principal = cast(Principal, found[0])
        backend.principals.put(digest, principal, backend._deadline(principal.token.payload))
        return principal

    def get_user(self, validated_token: Token) -> Principal:  # type: ignore[override]
        sub = validated_token.get("sub")
        if not isinstance(sub, str) or not _is_canonical_uuid(sub):
            raise InvalidToken("The token's sub is not a user UUID")
        structlog.contextvars.bind_contextvars(user_id=sub)  # on every log line of this request
        return Principal(validated_token)


def _is_canonical_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


class JWTAuthenticationScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes JWTAuthentication."""

    target_class = "payments_project.auth.JWTAuthentication"
    name = "jwtAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "The identity provider's JWT: `sub` is the user's UUID; `exp` required (API.md)",
        }
