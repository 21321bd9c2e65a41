"""``gridflow keys`` (issue, list, revoke API keys) and ``gridflow audit`` (query the audit
log), working on intake's database directly — as its host's administrator, the way the
first admin key comes to exist. Each key action is itself written to the audit log
(``via cli``, the OS user as the actor)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from shared import access

ROLE_HELP = ", ".join(f"{r}" for r in access.ROLES)


def add_arguments(sub: Any) -> None:
    k = sub.add_parser(
        "keys",
        help="issue, list and revoke API keys (intake's database)",
        description="API keys for intake's HTTP API. A key carries a role (patrol_app, "
        "department, operator, admin) and a scope (a grid node for patrol apps and "
        "operators, a department for departments). The token is printed once; only its "
        "hash is kept.",
    )
    ks = k.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    i = ks.add_parser("issue", help="issue a key and print its token",
                      description="Issue a key and print its token (shown this once).")
    i.add_argument("--client", required=True, help="who holds it, e.g. 'patrol app 草坝镇'")
    i.add_argument("--role", required=True, choices=access.ROLES)
    i.add_argument("--grid", help="patrol_app / operator: the grid node code it is limited to "
                   "(default: the whole district)")
    i.add_argument("--department", help="department: its department code, e.g. urban_mgmt")
    i.add_argument("--rate", type=int, metavar="N", help="requests a minute (default: the "
                   "service's GRIDFLOW_RATE_LIMIT_PER_MIN; 0: unlimited)")
    i.add_argument("--note", default="", help="free text kept with the key")
    i.add_argument("--json", action="store_true", help="print JSON")
    ls = ks.add_parser("list", help="list keys (without secrets)",
                       description="List the keys, without their secrets.")
    ls.add_argument("--all", action="store_true", help="revoked keys too")
    ls.add_argument("--json", action="store_true", help="print JSON")
    r = ks.add_parser("revoke", help="revoke a key", description="Revoke a key: it stops "
                      "working at once on this host's intake's next lookup (at most "
                      "GRIDFLOW_KEY_CACHE_S, 10 s, later on running instances).")
    r.add_argument("key_id", help="the key's id (the 12 hex characters after gfk_)")

    a = sub.add_parser(
        "audit",
        help="query the audit log (who did what, when, from where)",
        description="Print audit entries, newest first: every state-changing request "
        "(HTTP and AMQP) and every refusal of a known key.",
    )
    a.add_argument("--key", dest="key_id", help="one key's entries")
    a.add_argument("--actor", help="one client's (or department's) entries")
    a.add_argument("--action", help="e.g. whistle, ack, post_report, issue_key")
    a.add_argument("--target", help="a case id or key id")
    a.add_argument("--outcome", choices=("done", "denied"))
    a.add_argument("--since", type=datetime.fromisoformat, help="ISO 8601 with an offset")
    a.add_argument("--until", type=datetime.fromisoformat, help="ISO 8601 with an offset")
    a.add_argument("--limit", type=int, default=50, help="entries to print (max 500)")
    a.add_argument("--json", action="store_true", help="print JSON lines")


@contextmanager
def _intake_db() -> Iterator[Any]:
    from services.intake.keys import database
    from shared.config import Settings

    settings = Settings.from_config({})
    with database(settings.database_url, settings.var_dir) as s:
        yield s


def _cli_audit(s: Any, action: str, target: str, detail: dict[str, Any]) -> None:
    from services.intake import keys
    from shared.clock import utcnow

    keys.record(s, at=utcnow(), actor=f"os:{getpass.getuser()}", role=access.ADMIN,
                action=action, target=target, outcome="done", via="cli", detail=detail)


def _unknown_scope(grid: str | None, department: str | None) -> str | None:
    from services.intake.keys import unknown_scope
    from shared.config import Settings
    from shared.reference import load_reference

    ref = load_reference(Settings.from_config({}).data_dir)
    unknown = unknown_scope(ref, grid, department)
    if "grid" in unknown:
        return unknown["grid"]
    if "department" in unknown:
        return f"{unknown['department']} (known: {', '.join(ref.catalogue.departments)})"
    return None


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    text = [[str(r.get(c) if r.get(c) is not None else "") for c in columns] for r in rows]
    widths = [max([len(c), *(len(t[i]) for t in text)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)) for t in text]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from services.intake import keys
    from shared.clock import utcnow

    if args.command == "audit":
        since = args.since
        with _intake_db() as s:
            got = keys.query_audit(s, key_id=args.key_id, actor=args.actor, action=args.action,
                                   target=args.target, outcome=args.outcome, since=since,
                                   until=args.until, per_page=max(1, min(args.limit, 500)))
        if args.json:
            for e in got["entries"]:
                print(json.dumps(e, default=str, ensure_ascii=False))
        else:
            print(_table(got["entries"], ["at", "actor", "role", "action", "target", "outcome",
                                          "status", "via", "source"]))
            print(f"({len(got['entries'])} of {got['total']})")
        return 0
    who = f"os:{getpass.getuser()}"
    if args.keys_command == "issue":
        problem = access.check_scope_fields(args.role, args.grid, args.department) or \
            _unknown_scope(args.grid, args.department)
        if problem:
            print(f"gridflow keys issue: {problem}", file=sys.stderr)
            return 2
        with _intake_db() as s:
            listing, token = keys.issue(s, client=args.client, role=args.role, grid=args.grid,
                                        department=args.department, rate_per_min=args.rate,
                                        note=args.note, by=who, now=utcnow())
            _cli_audit(s, "issue_key", listing["key_id"],
                       {"client": args.client, "role": args.role})
        if args.json:
            print(json.dumps({"key": listing, "token": token}, default=str, ensure_ascii=False))
        else:
            print(f"{listing['role']} key {listing['key_id']} for {listing['client']}:")
            print(f"  {token}")
            print("Send it as 'Authorization: Bearer <token>'. It is shown only this once.")
        return 0
    if args.keys_command == "list":
        with _intake_db() as s:
            rows = keys.list_keys(s, include_revoked=args.all)
        if args.json:
            print(json.dumps(rows, default=str, ensure_ascii=False))
        else:
            print(_table(rows, ["key_id", "role", "client", "grid", "department",
                                "rate_per_min", "created_at", "revoked_at"]))
        return 0
    if args.keys_command == "revoke":
        with _intake_db() as s:
            listing = keys.revoke(s, args.key_id, by=who, now=utcnow())
            if listing is not None:
                _cli_audit(s, "revoke_key", args.key_id, {})
        if listing is None:
            print(f"gridflow keys revoke: no key {args.key_id}", file=sys.stderr)
            return 1
        print(f"revoked {args.key_id} ({listing['client']}) at {listing['revoked_at']}")
        return 0
    return 2
