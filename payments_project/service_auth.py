"""Service identity for /internal/: SPIFFE X.509-SVIDs, mutual TLS terminated by the Envoy sidecar.

With SERVICE_AUTH_MODE=xfcc the sidecar verifies the TLS handshake and forwards the client certificate
in X-Forwarded-Client-Cert (Envoy format `By=…;Hash=…;Cert="<url-encoded PEM>";Chain="…";URI=…`).
We trust nothing in that header but the certificate itself: its chain is verified again, here, against
the SPIFFE trust bundle file (SPIFFE_TRUST_BUNDLE, re-read when it changes) with
cryptography.x509.verification's client verifier, and the SPIFFE ID is taken from the verified leaf's
URI SAN — never from the header's `URI=` field. Then:
- the ID must be in SPIFFE_TRUST_DOMAIN, and
- in the view's allow-list: `required_service_scope = "entitlements.read"` reads
  SERVICE_ALLOWLIST["entitlements.read"] (settings; env SERVICE_ALLOWLIST / SERVICE_ALLOWLIST_<SCOPE>).

Answers: 401 for no header, a garbage header, a `URI=` without `Cert=`, or a certificate that does not
verify (expired, foreign CA, missing intermediate, no single SPIFFE URI SAN); 403 for a verified ID in
another trust domain or not on the endpoint's allow-list; 403 for every request when the mode is not
"xfcc" (/internal/ is closed); 503 when the trust bundle cannot be read.

The sidecar must sanitise the header (Envoy `forward_client_cert_details: SANITIZE_SET`, with
`set_current_client_cert_details: {cert: true, chain: true, uri: true}`): when several elements arrive,
the last — the one our sidecar wrote — is used. Certificates are public, so the header proves nothing
by itself: it is believed only from SERVICE_AUTH_TRUSTED_PEERS (REMOTE_ADDR, default loopback: the
sidecar in our pod), and an element whose `By=` names another SPIFFE ID than SERVICE_SPIFFE_ID was not
written by our sidecar. Either is a 401, whatever certificate it carries.
"""

import hashlib
import ipaddress
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

import structlog
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from payments_project.errors import DependencyUnavailable
from payments_project.lru import ExpiringLRU

if TYPE_CHECKING:
    from rest_framework.permissions import _PermissionClass

log = structlog.get_logger(__name__)

XFCC_META = "HTTP_X_FORWARDED_CLIENT_CERT"
MAX_XFCC_BYTES = 32 * 1024
MAX_CHAIN_CERTS = 8
# `required_service_scope = ANY_SERVICE`: any verified identity of our trust domain (e.g. whoami).
ANY_SERVICE: Final = "*"


class ServiceAuthenticationFailed(exceptions.AuthenticationFailed):
    default_detail = "A verified service identity is required"
    default_code = "service_unauthenticated"


class ServiceForbidden(exceptions.PermissionDenied):
    default_detail = "This service identity may not call this endpoint"
    default_code = "service_forbidden"


@dataclass(frozen=True)
class ServicePrincipal:
    """The calling workload, identified by the SPIFFE ID of its verified X.509-SVID."""

    spiffe_id: str
    trust_domain: str

    # Class attributes (not dataclass fields): what DRF and Django ask of a request's user.
    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    @property
    def pk(self) -> str:
        return self.spiffe_id

    @property
    def id(self) -> str:
        return self.spiffe_id

    def __str__(self) -> str:
        return self.spiffe_id


# --- XFCC parsing ------------------------------------------------------------------------------


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            current.append(char)
            escaped = True
        elif char == '"':
            current.append(char)
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise ValueError("unbalanced quotes")
    parts.append("".join(current))
    return parts


def parse_xfcc(header: str) -> list[dict[str, str]]:
    """Envoy's X-Forwarded-Client-Cert: comma-separated elements of `;`-separated key=value pairs."""
    elements = []
    for raw_element in _split_outside_quotes(header, ","):
        element: dict[str, str] = {}
        for pair in _split_outside_quotes(raw_element, ";"):
            if not pair.strip():
                continue
            key, sep, value = pair.strip().partition("=")
            if not sep or not key:
                raise ValueError(f"not a key=value pair: {pair[:40]!r}")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"')
            element.setdefault(key.strip().lower(), value)
        if element:
            elements.append(element)
    if not elements:
        raise ValueError("no elements")
    return elements


# --- the trust bundle ---------------------------------------------------------------------------


class _TrustBundle:
    """The trust bundle's CA certificates, re-read whenever the file changes (SPIRE rotates it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: tuple[str, float, int, list[x509.Certificate]] | None = None

    def certificates(self, path: str) -> list[x509.Certificate]:
        if not path:
            raise ImproperlyConfigured("SPIFFE_TRUST_BUNDLE is not set")
        stat = os.stat(path)
        with self._lock:
            if self._loaded is None or self._loaded[:3] != (path, stat.st_mtime, stat.st_size):
                with open(path, "rb") as bundle:
                    certificates = x509.load_pem_x509_certificates(bundle.read())
                self._loaded = (path, stat.st_mtime, stat.st_size, certificates)
            return self._loaded[3]


trust_bundle = _TrustBundle()


# --- SPIFFE IDs ---------------------------------------------------------------------------------


def spiffe_trust_domain(spiffe_id: str) -> str | None:
    """The trust domain of a well-formed SPIFFE ID (spiffe://domain/path), else None."""
    try:
        parts = urlsplit(spiffe_id)
        port = parts.port
    except ValueError:
        return None
    domain = parts.hostname or ""
    if (
        parts.scheme != "spiffe"
        or not domain
        or domain != parts.netloc  # no user info, no port, lower case
        or port is not None
        or parts.query
        or parts.fragment
        or not parts.path.strip("/")
        or any(segment in ("", ".", "..") for segment in parts.path[1:].split("/"))
        or not all(char.isalnum() or char in ".-_" for char in domain)
    ):
        return None
    return domain


def _spiffe_id_of(leaf: x509.Certificate) -> str:
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ServiceAuthenticationFailed("The client certificate has no SPIFFE ID") from None
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1 or spiffe_trust_domain(uris[0]) is None:
        raise ServiceAuthenticationFailed("The client certificate must carry exactly one SPIFFE ID (URI SAN)")
    return str(uris[0])


def from_trusted_peer(remote_addr: str) -> bool:
    """Whether the TCP peer (never X-Forwarded-For) is one whose XFCC header we believe: the sidecar."""
    try:
        peer = ipaddress.ip_address(remote_addr.strip())
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped:
        peer = peer.ipv4_mapped
    return any(peer in network for network in settings.SERVICE_AUTH_TRUSTED_PEERS)


# Verified XFCC headers, by sha256 (with the settings they were verified under), until the first of
# their certificates expires and for at most XFCC_VERIFIED_MAX_SECONDS: a trust bundle that drops a CA
# is obeyed within that time. A sidecar forwards the same header for every request of one caller, so
# the certificate chain is verified once per caller and minute, not on every internal call (issue 18).
XFCC_VERIFIED_MAX_SECONDS = 60
_verified_xfcc: ExpiringLRU[ServicePrincipal] = ExpiringLRU(1000)


@receiver(setting_changed)
def _forget_verified_xfcc(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith(("SPIFFE_", "SERVICE_")):
        _verified_xfcc.clear()


def verify_xfcc(header: str, *, now: datetime | None = None) -> ServicePrincipal:
    """Verify the forwarded client certificate and return who it identifies (raises 401 otherwise).
    Without `now`, a header verified before is answered from memory (`_verified_xfcc`)."""
    if len(header) > MAX_XFCC_BYTES:
        raise ServiceAuthenticationFailed("X-Forwarded-Client-Cert is too large")
    if now is not None:
        return _verify_xfcc(header, now=now)[0]
    key = hashlib.sha256(
        "\n".join((settings.SPIFFE_TRUST_BUNDLE, settings.SERVICE_SPIFFE_ID, header)).encode()
    ).digest()
    principal = _verified_xfcc.get(key)
    if principal is None:
        principal, not_after = _verify_xfcc(header, now=datetime.now(UTC))
        _verified_xfcc.put(key, principal, min(not_after, time.time() + XFCC_VERIFIED_MAX_SECONDS))
    return principal


def _verify_xfcc(header: str, *, now: datetime) -> tuple[ServicePrincipal, float]:
    """The principal, and when the first certificate of the chain it was verified with expires."""
    try:
        element = parse_xfcc(header)[-1]
    except ValueError:
        raise ServiceAuthenticationFailed("X-Forwarded-Client-Cert is malformed") from None
    if "by" in element and element["by"] != settings.SERVICE_SPIFFE_ID:
        # Our sidecar writes our own SPIFFE ID in By=; another one is a header relayed from elsewhere.
        log.warning("xfcc_not_from_our_sidecar", by=element["by"])
        raise ServiceAuthenticationFailed("X-Forwarded-Client-Cert was not written by this service's sidecar")
    if not element.get("cert"):
        # A `URI=` alone proves nothing: anyone can write one. Only a verified certificate counts.
        raise ServiceAuthenticationFailed("X-Forwarded-Client-Cert carries no certificate")
    try:
        leaf = x509.load_pem_x509_certificate(unquote(element["cert"]).encode())
        chain = x509.load_pem_x509_certificates(unquote(element["chain"]).encode()) if element.get("chain") else []
    except ValueError:
        raise ServiceAuthenticationFailed("The forwarded client certificate is not a PEM certificate") from None
    intermediates = [cert for cert in chain if cert != leaf][:MAX_CHAIN_CERTS]
    try:
        roots = trust_bundle.certificates(settings.SPIFFE_TRUST_BUNDLE)
    except (OSError, ValueError, ImproperlyConfigured) as exc:
        log.error("spiffe_trust_bundle_unreadable", path=settings.SPIFFE_TRUST_BUNDLE, error=str(exc))
        raise DependencyUnavailable("The service identity trust bundle is unavailable") from exc
    verifier = PolicyBuilder().store(Store(roots)).time(now).max_chain_depth(MAX_CHAIN_CERTS).build_client_verifier()
    try:
        verified = verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        log.info("service_certificate_rejected", reason=str(exc))
        raise ServiceAuthenticationFailed("The client certificate does not verify against the trust bundle") from None
    spiffe_id = _spiffe_id_of(leaf)
    not_after = min(cert.not_valid_after_utc.timestamp() for cert in [leaf, *verified.chain])
    return ServicePrincipal(spiffe_id=spiffe_id, trust_domain=spiffe_trust_domain(spiffe_id) or ""), not_after


# --- DRF ------------------------------------------------------------------------------------------


class ServiceAuthentication(BaseAuthentication):
    """DRF authentication for /internal/: the SPIFFE identity in the sidecar's XFCC header."""

    def authenticate(self, request: Request) -> tuple[ServicePrincipal, None] | None:
        if settings.SERVICE_AUTH_MODE != "xfcc":
            raise ServiceForbidden("The internal API is closed (SERVICE_AUTH_MODE is not xfcc)")
        header = request.META.get(XFCC_META, "")
        if not header:
            return None  # -> 401 through the permission check
        if not from_trusted_peer(request.META.get("REMOTE_ADDR", "")):
            log.warning("xfcc_from_untrusted_peer", peer=request.META.get("REMOTE_ADDR", ""))
            raise ServiceAuthenticationFailed("X-Forwarded-Client-Cert is accepted only from the sidecar")
        principal = verify_xfcc(header)
        return principal, None

    def authenticate_header(self, request: Request) -> str:
        # 401, not 403, when no identity was presented (DRF answers 403 without this header).
        return 'SPIFFE realm="internal"'


def allowed_ids(scope: str) -> frozenset[str]:
    return frozenset(settings.SERVICE_ALLOWLIST.get(scope, ()))


class HasServiceScope(BasePermission):
    """The caller is a verified service of our trust domain, on the view's allow-list."""

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.user
        if not isinstance(principal, ServicePrincipal):
            return False  # -> 401 (not authenticated)
        scope = getattr(view, "required_service_scope", None)
        if not scope:
            raise ImproperlyConfigured(f"{type(view).__name__} must set required_service_scope")
        expected_domain = settings.SPIFFE_TRUST_DOMAIN
        if not expected_domain or principal.trust_domain != expected_domain:
            log.info("service_forbidden", spiffe_id=principal.spiffe_id, reason="trust_domain")
            raise ServiceForbidden("This service identity belongs to another trust domain")
        if scope != ANY_SERVICE and principal.spiffe_id not in allowed_ids(scope):
            log.info("service_forbidden", spiffe_id=principal.spiffe_id, scope=scope, reason="not_allowed")
            raise ServiceForbidden(f"This service identity may not use '{scope}'")
        return True


class InternalServiceMixin:
    """Mix into any DRF view under /internal/v1/: service identity, allow-list, the `internal` rate."""

    authentication_classes: Sequence[type[BaseAuthentication]] = [ServiceAuthentication]
    permission_classes: Sequence["_PermissionClass"] = [HasServiceScope]
    rate_limit_group = "internal"
    required_service_scope: str = ""


class InternalAPIView(InternalServiceMixin, APIView):
    """Base view for the internal API: set `required_service_scope`."""


class ServiceAuthenticationScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes ServiceAuthentication."""

    target_class = "payments_project.service_auth.ServiceAuthentication"
    name = "spiffeMutualTLS"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "mutualTLS",
            "description": "SPIFFE X.509-SVID, verified by the sidecar and again here from X-Forwarded-Client-Cert",
        }


class WhoAmISerializer(serializers.Serializer):
    spiffe_id = serializers.CharField()
    trust_domain = serializers.CharField()


class WhoAmIView(InternalAPIView):
    """GET /internal/v1/whoami: the caller's verified SPIFFE ID (for operators wiring a new service)."""

    required_service_scope = ANY_SERVICE

    @extend_schema(responses=WhoAmISerializer, summary="The calling service's verified SPIFFE ID")
    def get(self, request: Request) -> Response:
        principal: ServicePrincipal = request.user  # type: ignore[assignment]
        return Response({"spiffe_id": principal.spiffe_id, "trust_domain": principal.trust_domain})
