"""Client identity: a stateless JWT principal (no user table lookup)."""

import uuid
from functools import cached_property

from rest_framework_simplejwt.authentication import JWTStatelessUserAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.models import TokenUser
from rest_framework_simplejwt.tokens import Token


class Principal(TokenUser):
    """The caller, as the token describes them: `id` is the UUID `sub`."""

    @cached_property
    def id(self) -> uuid.UUID:  # type: ignore[override]
        return uuid.UUID(str(self.token["sub"]))

    @cached_property
    def pk(self) -> uuid.UUID:  # type: ignore[override]
        return self.id

    @cached_property
    def email(self) -> str:
        return str(self.token.get("email", ""))

    @cached_property
    def scopes(self) -> frozenset[str]:
        return frozenset(str(self.token.get("scope", "")).split())


class JWTAuthentication(JWTStatelessUserAuthentication):
    """Bearer JWT; the algorithm and keys come from settings, never from the token."""

    def get_user(self, validated_token: Token) -> Principal:  # type: ignore[override]
        try:
            uuid.UUID(str(validated_token["sub"]))
        except (KeyError, ValueError) as exc:
            raise InvalidToken("The token's sub is not a user UUID") from exc
        return Principal(validated_token)
