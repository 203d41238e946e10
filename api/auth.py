"""Bearer tokens with scopes: ``read`` (GET), ``write`` (GET, and create, change, remove and
cancel standalone tenants and their jobs) and ``admin`` (everything, including what widens a
tenant's powers on its host: ``superuser: true``)."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

SCOPES = ("admin", "write", "read")
_bearer = HTTPBearer(auto_error=False, description="API token: `python -m api create-token --scope admin`")


@dataclass(frozen=True)
class Principal:
    id: int
    name: str
    scope: str
    token: str  # kept for the request only: it unwraps the caller's own job credentials

    def __repr__(self) -> str:  # never print the token
        return f"Principal(id={self.id}, name={self.name!r}, scope={self.scope!r})"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise _unauthorized("missing bearer token")
    row = request.app.state.catalog.token(credentials.credentials)
    if row is None:
        raise _unauthorized("invalid or revoked token")
    return Principal(row["id"], row["name"], row["scope"], credentials.credentials)


def reader(who: Annotated[Principal, Depends(principal)]) -> Principal:
    return who


def writer(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if who.scope not in ("admin", "write"):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"token {who.name!r} has scope {who.scope!r}; write or admin required"
        )
    return who


def admin(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if who.scope != "admin":
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"token {who.name!r} has scope {who.scope!r}; admin required"
        )
    return who
