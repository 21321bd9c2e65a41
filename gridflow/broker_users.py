"""``gridflow broker-users``: one RabbitMQ user per department and per service.

The grants come from ``shared.amqp.permissions``; this module puts them on the broker
through the management HTTP API, idempotently: each user is created or updated (password,
tags), its topic permissions and its vhost permissions are reset to exactly its grant.
Passwords are generated once (``secrets.token_urlsafe``) and kept in a secrets file
(``<var>/secrets/broker-users.json``, mode 0600), so that a second run keeps them, unless
``rotate``. ``gridflow up`` calls ``provision`` and starts each service with its own URI
(``amqp_uri_for``).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import requests

from shared.amqp.permissions import DEPARTMENT, SERVICE, Grant, default_prefix, grants
from shared.private_files import write_private

ADMIN_URL_ENV = "GRIDFLOW_RABBIT_ADMIN_URL"
MANAGEMENT_PORT = 15672
SECRETS_FILE = Path("secrets") / "broker-users.json"  # under the var dir
TIMEOUT_S = 10.0
LOOPBACK = {"127.0.0.1", "localhost", "::1", ""}


class ProvisionError(Exception):
    """The users could not be provisioned; the message says why and what to do."""


# -- URIs ----------------------------------------------------------------------------------------
def vhost_of(amqp_uri: str) -> str:
    """The vhost an AMQP URI names: ``amqp://h:5672/`` and ``…/%2F`` are ``/``."""
    path = urllib.parse.urlsplit(amqp_uri).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


def amqp_uri_for(base_amqp_uri: str, user: str, password: str, vhost: str | None = None) -> str:
    """``base_amqp_uri`` (scheme, host, port, query) with ``user``'s credentials, and
    ``vhost`` instead of its own when given."""
    parts = urllib.parse.urlsplit(base_amqp_uri)
    host = parts.netloc.rpartition("@")[2]
    auth = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"
    path = parts.path
    if vhost is not None and vhost != vhost_of(base_amqp_uri):
        path = "/" + urllib.parse.quote(vhost, safe="")
    return urllib.parse.urlunsplit((parts.scheme, f"{auth}@{host}", path, parts.query, ""))


def default_admin_url(amqp_uri: str, env: Mapping[str, str] | None = None) -> str:
    """``GRIDFLOW_RABBIT_ADMIN_URL``, else the management API on the broker's host (port
    15672) with the credentials of ``amqp_uri``: ``http://guest:guest@127.0.0.1:15672`` for
    the default ``AMQP_URI``."""
    env = os.environ if env is None else env
    if env.get(ADMIN_URL_ENV):
        return env[ADMIN_URL_ENV]
    parts = urllib.parse.urlsplit(amqp_uri)
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    user = parts.username if parts.username is not None else "guest"
    password = parts.password if parts.password is not None else "guest"
    return f"http://{user}:{password}@{host}:{MANAGEMENT_PORT}"


def is_external(amqp_uri: str) -> bool:
    """Whether the broker is on another machine (not the one ``gridflow up`` manages)."""
    return (urllib.parse.urlsplit(amqp_uri).hostname or "") not in LOOPBACK


def redacted(url: str) -> str:
    """A URL without its credentials, for messages."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(
        (parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


# -- the secrets file ----------------------------------------------------------------------------
def default_secrets_path(var_dir: Path) -> Path:
    return var_dir / SECRETS_FILE


def load_secrets(path: Path) -> dict[str, dict[str, str]]:
    """``{user: {"password": …, "role": …, "subject": …}}`` (empty if there is no file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ProvisionError(f"cannot read the secrets file {path}: {exc}") from exc
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict):
        raise ProvisionError(f"the secrets file {path} has no \"users\" object")
    return {str(k): v for k, v in users.items()
            if isinstance(v, dict) and isinstance(v.get("password"), str)}


def save_secrets(path: Path, users: Mapping[str, Mapping[str, str]]) -> None:
    """Write atomically, readable by its owner only (0600, in a 0700 directory)."""
    body = {
        "note": "passwords of gridflow's RabbitMQ users (gridflow broker-users); keep private",
        "users": {k: dict(users[k]) for k in sorted(users)},
    }
    write_private(path, json.dumps(body, indent=2, ensure_ascii=False) + "\n")


# -- the management API --------------------------------------------------------------------------
class ManagementApi:
    """The few management API calls provisioning needs, with an administrator's credentials
    taken from ``admin_url`` (``http://user:password@host:15672``)."""

    def __init__(self, admin_url: str, timeout: float = TIMEOUT_S) -> None:
        parts = urllib.parse.urlsplit(admin_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProvisionError(f"not an http(s) management API URL: {redacted(admin_url)}")
        self.base = redacted(admin_url).rstrip("/")
        self.user = urllib.parse.unquote(parts.username or "guest")
        self.auth = (self.user, urllib.parse.unquote(parts.password or "guest"))
        self.timeout = timeout
        self.session = requests.Session()

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = ()) -> Any:
        url = f"{self.base}/api/{path}"
        try:
            r = self.session.request(method, url, json=body, auth=self.auth,
                                     timeout=self.timeout)
        except requests.RequestException as exc:
            raise ProvisionError(
                f"the RabbitMQ management API at {self.base} is unreachable "
                f"({type(exc).__name__}); is the management plugin on (rabbitmq-plugins enable "
                f"rabbitmq_management)? Or give its URL in --admin-url / {ADMIN_URL_ENV}"
            ) from exc
        if r.status_code in ok:
            return None
        if r.status_code == 401:
            raise ProvisionError(
                f"the management API at {self.base} refused the credentials of {self.user!r} "
                f"(401): give an administrator's in --admin-url / {ADMIN_URL_ENV} "
                f"(http://USER:PASSWORD@host:{MANAGEMENT_PORT})")
        if r.status_code >= 400:
            raise ProvisionError(f"{method} {self.base}/api/{path} answered {r.status_code}: "
                                 f"{r.text[:300]}")
        return r.json() if r.content else None

    @staticmethod
    def q(name: str) -> str:
        return urllib.parse.quote(name, safe="")

    def check_admin(self, vhost: str) -> None:
        who = self.call("GET", "whoami") or {}
        tags = who.get("tags", [])
        tags = tags.split(",") if isinstance(tags, str) else tags
        if "administrator" not in tags:
            raise ProvisionError(
                f"{self.user!r} may not manage users on {self.base} (tags: "
                f"{', '.join(tags) or 'none'}): give an administrator's credentials in "
                f"--admin-url / {ADMIN_URL_ENV}")
        if self.call("GET", f"vhosts/{self.q(vhost)}", ok=(404,)) is None:
            raise ProvisionError(f"there is no vhost {vhost!r} on {self.base}")

    def user_exists(self, name: str) -> bool:
        return self.call("GET", f"users/{self.q(name)}", ok=(404,)) is not None

    def put_user(self, name: str, password: str, tags: Iterable[str]) -> None:
        self.call("PUT", f"users/{self.q(name)}",
                  {"password": password, "tags": ",".join(tags)})

    def set_grant(self, vhost: str, grant: Grant) -> None:
        """Exactly ``grant``'s topic permissions, then its vhost permissions (a new user
        cannot connect before the latter, so it never runs without the former)."""
        where = f"{self.q(vhost)}/{self.q(grant.name)}"
        have = self.call("GET", f"topic-permissions/{where}", ok=(404,)) or []
        wanted = {t.exchange for t in grant.topics}
        if any(t.get("exchange") not in wanted for t in have):
            self.call("DELETE", f"topic-permissions/{where}", ok=(404,))
        for topic in grant.topics:
            self.call("PUT", f"topic-permissions/{where}", topic.as_json())
        self.call("PUT", f"permissions/{where}", grant.permissions())


# -- provisioning --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Credentials:
    """The users provisioned in ``vhost`` and their passwords."""

    vhost: str
    prefix: str
    grants: tuple[Grant, ...]
    passwords: Mapping[str, str] = field(repr=False)
    secrets_path: Path
    created: tuple[str, ...] = ()  # users that did not exist on the broker
    rotated: tuple[str, ...] = ()  # users whose password changed

    def grant(self, role: str, subject: str) -> Grant:
        for g in self.grants:
            if g.role == role and g.subject == subject:
                return g
        raise KeyError(f"no {role} user for {subject!r} was provisioned")

    def uri(self, base_amqp_uri: str, role: str, subject: str) -> str:
        g = self.grant(role, subject)
        return amqp_uri_for(base_amqp_uri, g.name, self.passwords[g.name], self.vhost)

    def service_uri(self, base_amqp_uri: str, service: str) -> str:
        return self.uri(base_amqp_uri, SERVICE, service)

    def department_uri(self, base_amqp_uri: str, code: str) -> str:
        return self.uri(base_amqp_uri, DEPARTMENT, code)


def provision(
    admin_url: str,
    vhost: str,
    departments: Iterable[str],
    services: Iterable[str],
    secrets_path: Path,
    *,
    rotate: bool = False,
    prefix: str | None = None,
    timeout: float = TIMEOUT_S,
) -> Credentials:
    """Create or update every user of ``vhost`` and reset its permissions to its grant.
    Passwords in ``secrets_path`` are kept unless ``rotate``; new ones are written there
    before the broker is told, so that the file never lags behind the broker.
    ``prefix``: before every user name; default ``default_prefix(vhost)``."""
    prefix = default_prefix(vhost) if prefix is None else prefix
    wanted = grants(departments, services, prefix)
    api = ManagementApi(admin_url, timeout)
    api.check_admin(vhost)
    stored = load_secrets(secrets_path)
    passwords: dict[str, str] = {}
    rotated: list[str] = []
    for g in wanted:
        old = stored.get(g.name, {}).get("password")
        passwords[g.name] = old if old and not rotate else secrets.token_urlsafe(24)
        if old and old != passwords[g.name]:
            rotated.append(g.name)
    merged = {**stored, **{g.name: {"password": passwords[g.name], "role": g.role,
                                    "subject": g.subject} for g in wanted}}
    if merged != stored:
        save_secrets(secrets_path, merged)
    elif secrets_path.exists():
        os.chmod(secrets_path, 0o600)
    created = []
    for g in wanted:
        if not api.user_exists(g.name):
            created.append(g.name)
        api.put_user(g.name, passwords[g.name], g.tags)
        api.set_grant(vhost, g)
    return Credentials(vhost, prefix, tuple(wanted), passwords, secrets_path,
                       tuple(created), tuple(rotated))


# -- the command ---------------------------------------------------------------------------------
def table(creds: Credentials, show_passwords: bool = False) -> str:
    rows = [("user", "role", "may read", "may publish", *(["password"] if show_passwords
                                                           else []))]
    for g in creds.grants:
        rows.append((g.name, g.role, g.reads, g.publishes,
                     *([creds.passwords[g.name]] if show_passwords else [])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip()
        for r in rows)


def main(args: Any, out: TextIO = sys.stdout) -> int:
    from gridflow import SERVICES
    from shared.config import Settings
    from shared.reference import load_reference

    settings = Settings.from_config({})
    vhost = args.vhost or vhost_of(settings.amqp_uri)
    secrets_path = Path(args.secrets) if args.secrets else default_secrets_path(
        settings.var_dir)
    try:
        departments = load_reference(settings.data_dir).catalogue.departments
        creds = provision(args.admin_url or default_admin_url(settings.amqp_uri), vhost,
                          departments, SERVICES, secrets_path, rotate=args.rotate,
                          prefix=args.prefix)
    except ProvisionError as exc:
        print(f"gridflow broker-users: {exc}", file=sys.stderr)
        return 1
    print(table(creds, args.show_passwords), file=out)
    print("", file=out)
    print(f"{len(creds.grants)} users in vhost {vhost!r}: {len(creds.created)} created, "
          f"{len(creds.rotated)} passwords rotated; passwords in {secrets_path} (mode 0600)"
          + ("" if args.show_passwords else "; --show-passwords prints them"), file=out)
    dept = next((g for g in creds.grants if g.role == DEPARTMENT), None)
    if dept is not None:
        example = amqp_uri_for(settings.amqp_uri, dept.name, "PASSWORD", vhost)
        print(f"a department subscribes as itself: gridflow subscribe --department "
              f"{dept.subject} --amqp-uri {example}", file=out)
    return 0
