"""Credentials for tests: client JWTs (`bearer`) and SPIFFE certificates with Envoy XFCC headers.

client.get("/api/v1/payments", HTTP_AUTHORIZATION=bearer(user_id))
client.get("/internal/v1/whoami", HTTP_X_FORWARDED_CLIENT_CERT=pki.xfcc(pki.leaf("spiffe://...")))
"""

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.conf import settings

if TYPE_CHECKING:
    from django.test import Client

# ---------------------------------------------------------------------------------------------
# Client JWTs


def token(
    user_id: uuid.UUID | str,
    *,
    email: str = "",
    ttl: int = 3600,
    key: Any = None,
    algorithm: str | None = None,
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A JWT as the identity provider would issue it, signed with the test settings' key by default.

    A claim given as None is left out (e.g. `exp=None`); `iss`/`aud` default to the configured ones.
    """
    now = int(time.time())
    payload: dict[str, Any] = {"sub": str(user_id), "iat": now, "nbf": now, "exp": now + ttl}
    if email:
        payload["email"] = email
    if settings.JWT_ISSUER:
        payload["iss"] = settings.JWT_ISSUER
    if settings.JWT_AUDIENCE:
        payload["aud"] = settings.JWT_AUDIENCE
    payload.update(claims)
    payload = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(
        payload,
        key if key is not None else settings.JWT_SIGNING_KEY,
        algorithm=algorithm or settings.JWT_ALGORITHM,
        headers=headers,
    )


def bearer(user_id: uuid.UUID | str, email: str = "", **claims: Any) -> str:
    """The Authorization header value for a valid client token: `Bearer <jwt>`."""
    return f"Bearer {token(user_id, email=email, **claims)}"


# ---------------------------------------------------------------------------------------------
# SPIFFE certificates


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Digital signatures; a CA also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class SpiffePki:
    """A trust domain's CA, an intermediate under it, and leaf SVIDs issued by the intermediate."""

    trust_domain: str = "jia.test"
    root: Issued = field(init=False)
    intermediate: Issued = field(init=False)

    def __post_init__(self) -> None:
        self.root = self._ca(f"{self.trust_domain} root CA", issuer=None, path_length=1)
        self.intermediate = self._ca(f"{self.trust_domain} intermediate CA", issuer=self.root, path_length=0)

    def _ca(self, common_name: str, *, issuer: Issued | None, path_length: int) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        subject = _name(common_name)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.cert.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if issuer:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
            )
        signer = issuer.key if issuer else key
        return Issued(builder.sign(signer, hashes.SHA256()), key)

    def leaf(
        self,
        spiffe_id: str,
        *,
        expired: bool = False,
        issuer: Issued | None = None,
        client_auth: bool = True,
    ) -> Issued:
        """An X.509-SVID for `spiffe_id` (URI SAN), issued by the intermediate unless told otherwise."""
        issuer = issuer or self.intermediate
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        start, end = (
            (now - timedelta(days=10), now - timedelta(days=1))
            if expired
            else (now - timedelta(hours=1), now + timedelta(hours=1))
        )
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [ExtendedKeyUsageOID.SERVER_AUTH]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")]))
            .issuer_name(issuer.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
            .sign(issuer.key, hashes.SHA256())
        )
        return Issued(cert, key)

    def bundle_pem(self) -> str:
        """The trust bundle: the root only (intermediates travel with the leaf, in the XFCC Chain)."""
        return self.root.pem

    def write_bundle(self, directory: Path) -> Path:
        path = directory / "bundle.pem"
        path.write_text(self.bundle_pem())
        return path

    def xfcc(self, leaf: Issued, *, with_chain: bool = True, uri: str | None = None) -> str:
        """Envoy's X-Forwarded-Client-Cert for this client certificate (with its intermediate)."""
        return xfcc(leaf, chain=[leaf, self.intermediate] if with_chain else None, uri=uri)


def xfcc(leaf: Issued | None, *, chain: list[Issued] | None = None, uri: str | None = None) -> str:
    """One XFCC element as Envoy writes it: By, Hash, Cert (url-encoded PEM), Chain, URI."""
    parts = ["By=spiffe://jia.test/ns/payments/sa/payments"]
    if leaf is not None:
        digest = leaf.cert.fingerprint(hashes.SHA256()).hex()
        parts += [f"Hash={digest}", f'Cert="{quote(leaf.pem, safe="")}"']
    if chain:
        parts.append(f'Chain="{quote("".join(item.pem for item in chain), safe="")}"')
    if uri is None and leaf is not None:
        sans = leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
        uri = uris[0] if uris else None
    if uri:
        parts.append(f"URI={uri}")
    return ";".join(parts)


# ---------------------------------------------------------------------------------------------
# A JWKS endpoint on 127.0.0.1


class JwksServer:
    """Serves `keys` (a list of public JWK dicts) at http://127.0.0.1:<port>/jwks.json and counts fetches.

    A test makes it misbehave: `delay` seconds before answering (a hanging identity provider), `status`
    other than 200 (a failing one, answering `{"error": ...}`; with `location`, a redirect); `fetches`
    counts requests received.
    """

    def __init__(self, keys: list[dict[str, Any]] | None = None) -> None:
        self.keys: list[dict[str, Any]] = list(keys or [])
        self.fetches = 0
        self.delay = 0.0
        self.status = 200
        self.location = ""  # with a 3xx status: where it redirects
        self._count = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._count:
                    server.fetches += 1
                if server.delay:
                    time.sleep(server.delay)
                ok = server.status == 200
                body = json.dumps({"keys": server.keys} if ok else {"error": "down"}).encode()
                try:
                    self.send_response(server.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    if server.location:
                        self.send_header("Location", server.location)
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up waiting
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_port}/jwks.json"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> "JwksServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def public_jwk(private_key: Any, *, kid: str, alg: str | None = None) -> dict[str, Any]:
    """The public JWK of a private key, as an identity provider publishes it."""
    algorithm = jwt.get_algorithm_by_name(alg or _default_alg(private_key))
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(private_key.public_key()))
    jwk.update({"kid": kid, "use": "sig"})
    if alg:
        jwk["alg"] = alg
    return jwk


def _default_alg(private_key: Any) -> str:
    if isinstance(private_key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return "ES256"
    return "EdDSA"


def public_pem(private_key: Any) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def staff_client(username: str, role: str | None) -> "Client":
    """A signed-in Django admin client for a staff user holding `role` (None: staff with no role)."""
    # Imported here: benchmarks import this module before Django is set up.
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user(username=username, password="pw", is_staff=True)
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return signed_in(user)


def signed_in(user: Any) -> "Client":
    """A client signed in to admin as `user` past both factors, as after a TOTP code: the admin refuses a
    staff session without a verified second factor."""
    from django.test import Client
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device, _ = TOTPDevice.objects.get_or_create(user=user, name="test authenticator", defaults={"confirmed": True})
    client = Client()
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client
