"""Per-unit credentials of the interface route (5.2.2, Appendix B): the Appid and AppSecret the
collecting organisation gives each unit (B.1), and the access tokens the unit gets with them
(B.2).

Nothing a thief of the target could use is stored: the AppSecret as a salted scrypt hash
(`hashlib.scrypt`, memory-hard, parameters kept with the hash), each token as its SHA-256 (a
token is 256 random bits: a fast hash is enough, and the lookup by hash leaks no useful timing).
A secret is compared in constant time, and an unknown Appid costs the same scrypt as a known
one. Rotating raises the app's generation and revokes its tokens; revoking ends the app and its
tokens in one transaction. `etl apps` runs as the target's owner; the service (as the loader)
only reads apps and appends tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.common import clock
from etl.common.errors import ConfigError, EtlError
from etl.standard.checks import is_valid_uscc
from etl.target.schema import ingest_app, ingest_token

ACTIVE, REVOKED = "active", "revoked"
APP_ID = re.compile(r"[0-9a-f]{16}")
MAX_SECRET_CHARS = 256
MAX_TOKEN_CHARS = 256
#: scrypt's cost: about 16 MiB and some tens of milliseconds per check (RFC 7914's interactive
#: parameters); kept in each hash, so raising them later leaves old hashes readable.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1


class Unauthorized(EtlError):
    """An Appid, AppSecret or access_token the service does not accept: the unit gets a new
    token or asks for its credentials. The message is the one the unit reads, Chinese first."""

    exit_code = 2


@dataclass(frozen=True)
class App:
    org_no: str
    app_id: str
    state: str
    created_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None
    last_used: datetime | None  # the last token issued: when the secret was last used


@dataclass(frozen=True)
class Issued:
    token: str
    expires_in: int  # seconds


# --- hashing ----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_secret(secret: str) -> str:
    """`scrypt$N$r$p$salt$hash`, base64 salt and hash."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def secret_matches(secret: str, stored: str) -> bool:
    """Whether `secret` is the one `stored` is the hash of, compared in constant time."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(secret.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), dklen=len(expected))
    except ValueError:
        return False
    return kind == "scrypt" and hmac.compare_digest(got, expected)


@cache
def _decoy() -> str:
    """A hash no secret matches, checked for an unknown Appid so that it costs what a known one
    does."""
    return hash_secret(secrets.token_urlsafe(32))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- etl apps ---------------------------------------------------------------------------------


def unit(org_no: str) -> str:
    """The orgNo as `etl apps` takes it: a unified social credit code (GB 32100), upper case."""
    value = org_no.strip().upper()
    if not is_valid_uscc(value):
        raise ConfigError(f"ORGNO {org_no[:40]!r} is not a unified social credit code (GB 32100: 18 "
                          f"characters with a valid check character): give the unit's orgNo")
    return value


def _active(conn: sa.Connection, org_no: str) -> sa.Row | None:
    return conn.execute(sa.select(ingest_app).where(ingest_app.c.orgNo == org_no,
                                                    ingest_app.c.state == ACTIVE)).first()


def _no_app(org_no: str) -> ConfigError:
    return ConfigError(f"unit {org_no} has no active app: give it one with `etl apps add {org_no}`")


def add(engine: Engine, org_no: str, *, now: datetime | None = None) -> tuple[App, str]:
    """A new app for the unit: its Appid and AppSecret (the secret only here, never again)."""
    org_no, now = unit(org_no), now or clock.now()
    secret = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        held = _active(conn, org_no)
        if held is not None:
            raise ConfigError(f"unit {org_no} has app {held.appId} already: `etl apps rotate "
                              f"{org_no}` gives it a new secret, `etl apps revoke {org_no}` ends it")
        app_id = secrets.token_hex(8)
        conn.execute(ingest_app.insert().values(appId=app_id, orgNo=org_no, secretHash=hash_secret(secret),
                                                generation=1, state=ACTIVE, createdAt=now))
    return App(org_no, app_id, ACTIVE, now, None, None, None), secret


def _revoke_tokens(conn: sa.Connection, app_id: str, now: datetime) -> int:
    return conn.execute(ingest_token.update().where(ingest_token.c.appId == app_id,
                                                    ingest_token.c.revokedAt.is_(None))
                        .values(revokedAt=now)).rowcount


def rotate(engine: Engine, org_no: str, *, now: datetime | None = None) -> tuple[App, str, int]:
    """A new AppSecret for the unit's app (same Appid); the old secret and every token issued
    with it stop working at once. Returns the app, the new secret and how many tokens ended."""
    org_no, now = unit(org_no), now or clock.now()
    secret = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        held = _active(conn, org_no)
        if held is None:
            raise _no_app(org_no)
        conn.execute(ingest_app.update().where(ingest_app.c.appId == held.appId).values(
            secretHash=hash_secret(secret), generation=held.generation + 1, rotatedAt=now))
        ended = _revoke_tokens(conn, held.appId, now)
    return App(org_no, held.appId, ACTIVE, held.createdAt, now, None, None), secret, ended


def revoke(engine: Engine, org_no: str, *, now: datetime | None = None) -> tuple[App, int]:
    """End the unit's app and every token of it; `etl apps add` may give it a new one later."""
    org_no, now = unit(org_no), now or clock.now()
    with engine.begin() as conn:
        held = _active(conn, org_no)
        if held is None:
            raise _no_app(org_no)
        conn.execute(ingest_app.update().where(ingest_app.c.appId == held.appId)
                     .values(state=REVOKED, revokedAt=now))
        ended = _revoke_tokens(conn, held.appId, now)
    return App(org_no, held.appId, REVOKED, held.createdAt, held.rotatedAt, now, None), ended


def list_apps(engine: Engine) -> list[App]:
    """Every app, by unit then creation; never a secret nor its hash."""
    used = (sa.select(ingest_token.c.appId, sa.func.max(ingest_token.c.issuedAt).label("lastUsed"))
            .group_by(ingest_token.c.appId).subquery())
    query = (sa.select(ingest_app.c.orgNo, ingest_app.c.appId, ingest_app.c.state, ingest_app.c.createdAt,
                       ingest_app.c.rotatedAt, ingest_app.c.revokedAt, used.c.lastUsed)
             .outerjoin(used, used.c.appId == ingest_app.c.appId)
             .order_by(ingest_app.c.orgNo, ingest_app.c.createdAt))
    with engine.connect() as conn:
        return [App(r.orgNo, r.appId, r.state, *(_cst(t) for t in (r.createdAt, r.rotatedAt,
                                                                    r.revokedAt, r.lastUsed)))
                for r in conn.execute(query)]


def _cst(moment: datetime | None) -> datetime | None:
    """A stored time as CST: PostgreSQL gives it zone-aware, SQLite and MariaDB as written (CST)."""
    return None if moment is None else clock.to_cst(moment)


# --- the service ------------------------------------------------------------------------------


def issue_token(engine: Engine, app_id: str, secret: str, lifetime_s: int, *,
                now: datetime | None = None) -> Issued:
    """B.2: an access_token for the app whose Appid and AppSecret these are."""
    now = now or clock.now()
    held = None
    if APP_ID.fullmatch(app_id) and len(secret) <= MAX_SECRET_CHARS:
        with engine.connect() as conn:
            held = conn.execute(sa.select(ingest_app).where(ingest_app.c.appId == app_id)).first()
    active = held is not None and held.state == ACTIVE
    matches = secret_matches(secret[:MAX_SECRET_CHARS], held.secretHash if active else _decoy())
    if not (active and matches):
        raise Unauthorized("appid 或 secret 错误，或该应用已被撤销：请核对凭证，或联系归集单位"
                           "（wrong appid or secret, or the app was revoked）")
    token = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(ingest_token.insert().values(
            tokenHash=token_hash(token), appId=app_id, generation=held.generation, issuedAt=now,
            expiresAt=now + timedelta(seconds=lifetime_s)))
    return Issued(token, lifetime_s)


def authenticate(engine: Engine, token: str, *, now: datetime | None = None) -> str:
    """The orgNo of the unit a valid access_token was issued to; `Unauthorized` otherwise."""
    now = now or clock.now()
    row = None
    if 0 < len(token) <= MAX_TOKEN_CHARS:
        query = (sa.select(ingest_token.c.expiresAt, ingest_token.c.revokedAt,
                           ingest_token.c.generation, ingest_app.c.orgNo, ingest_app.c.state,
                           ingest_app.c.generation.label("current"))
                 .join(ingest_app, ingest_app.c.appId == ingest_token.c.appId)
                 .where(ingest_token.c.tokenHash == token_hash(token)))
        with engine.connect() as conn:
            row = conn.execute(query).first()
    if row is None:
        raise Unauthorized("access_token 无效：请用 appid 和 secret 重新获取（invalid access_token: "
                           "get one from /jsdspcloud/servlet/token）")
    if row.revokedAt is not None or row.state != ACTIVE or row.generation != row.current:
        raise Unauthorized("access_token 已失效：凭证已轮换或撤销，请用新的 secret 重新获取"
                           "（the token was revoked with its secret: get a new one）")
    if clock.to_cst(row.expiresAt) <= now:
        raise Unauthorized("access_token 已过期：请用 appid 和 secret 重新获取（the token expired: "
                           "get a new one）")
    return row.orgNo
