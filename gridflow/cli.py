"""``gridflow``: run the services, subscribe and respond as a department, simulate a
district's day, declare the broker topology, provision broker users, manage API keys and
read the audit log."""

from __future__ import annotations

import argparse
import os
import sys

from gridflow import SERVICES

DEFAULT_AMQP = os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gridflow",
        description="gridflow: report → route → escalate → dispatch for grid governance.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "up",
        help="run every service (the demo district by default)",
        description="Run all services as separate processes, on a demo clock (--speed), "
        "with a simulated district (gridflow simulate) once intake answers; restart crashes; "
        "Ctrl-C stops them all.",
    )
    up.add_argument(
        "--services",
        nargs="+",
        choices=sorted(SERVICES),
        metavar="SERVICE",
        help=f"only these ({', '.join(sorted(SERVICES))})",
    )
    up.add_argument(
        "--speed",
        type=_positive,
        default=60.0,
        metavar="S",
        help="demo clock: S demo seconds per real second, starting at 08:30 of a working day "
        "(default 60: a demo day in 24 minutes, a 30-minute report-in deadline in 30 seconds); "
        "1 runs on real time",
    )
    up.add_argument(
        "--rate",
        type=float,
        default=10.0,
        metavar="N",
        help="the simulator's reports per real minute (default 10)",
    )
    up.add_argument(
        "--no-simulator",
        action="store_true",
        help="no simulated district: a quiet system for the manual walkthrough",
    )

    run = sub.add_parser(
        "run",
        help="run one service in the foreground",
        description="Run one service in this terminal (JSON logs on stderr).",
    )
    run.add_argument("service", choices=sorted(SERVICES))
    run.add_argument("--config", help="nameko YAML config (default deploy/config/gridflow.yaml)")

    s = sub.add_parser(
        "subscribe",
        help="consume a department's (or a grid tier's) dispatch queue (reference client)",
        description="Consume dispatch.<department> (or dispatch.tier.<tier>, what grid tier "
        "owners are told: escalations, reminders, whistles) with pika: print each message or "
        "forward it to a URL, dropping duplicate message ids, acking only after handling.",
    )
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--department", help="department code, e.g. urban_mgmt")
    who.add_argument("--tier", choices=["compound", "area", "community", "street", "district"],
                     help="a grid tier's queue instead, e.g. community")
    s.add_argument(
        "--forward",
        metavar="URL",
        help="POST each message to URL; retried with backoff until it answers 2xx",
    )
    s.add_argument("--secret", help="sign each forward (X-Gridflow-Signature) with this "
                   "shared secret; comma-separated while rotating (default "
                   "$GRIDFLOW_FORWARD_SECRET)")
    s.add_argument("--amqp-uri", default=DEFAULT_AMQP, help="broker URL (default $AMQP_URI)")
    s.add_argument("--prefetch", type=int, default=10, help="unacked messages in flight")
    s.add_argument("--json", action="store_true", help="print the full JSON of each message")
    s.add_argument("--max-messages", type=int, help="exit after this many messages")

    r = sub.add_parser(
        "respond",
        help="answer for a department over AMQP: ack, progress, resolve or return",
        description="Publish a department's answer to gridflow.responses (routing key "
        "<department>.<action>) with publisher confirms; the body is what the HTTP API takes.",
    )
    r.add_argument("action", choices=["ack", "progress", "resolve", "return"])
    r.add_argument("case_id", help="the case, e.g. 20261123-000042")
    r.add_argument("--department", required=True, help="your department code, e.g. police")
    r.add_argument("--note", help="what was done / why (required for progress and resolve)")
    r.add_argument("--media", nargs="*", metavar="URL", help="photo URLs (progress, resolve)")
    r.add_argument("--reason-code", help="for return: not_our_responsibility, wrong_location, "
                   "duplicate, needs_other_department, cannot_handle, other")
    r.add_argument("--actor", help="who in the department")
    r.add_argument("--message-id", help="the message id (default: a new UUID); reuse it to "
                   "retry safely")
    r.add_argument("--amqp-uri", default=DEFAULT_AMQP, help="broker URL (default $AMQP_URI)")

    from gridflow import simulator

    sim = sub.add_parser(
        "simulate",
        help="play a district's day against a running gridflow (reports, departments, "
        "grid workers, ratings)",
        description=simulator.DESCRIPTION,
    )
    simulator.add_arguments(sim)

    t = sub.add_parser(
        "topology",
        help="declare every exchange and queue on the broker",
        description="Declare gridflow's exchanges, queues and bindings "
        "(idempotent; every service also does this at start).",
    )
    t.add_argument("--amqp-uri", default=DEFAULT_AMQP, help="broker URL (default $AMQP_URI)")

    from gridflow import keys_cli

    keys_cli.add_arguments(sub)

    bu = sub.add_parser(
        "broker-users",
        help="create or update a RabbitMQ user per department and per service",
        description="Provision gridflow's broker users through the management API: "
        "dept.<code> may read only dispatch.<code> and publish only <code>.<action> on "
        "gridflow.responses; gridflow-<service> runs a service (never administrator; the "
        "monitor's is monitoring). Idempotent: passwords are kept in the secrets file, "
        "permissions reset to exactly the grants. Users of a vhost other than / are named "
        "<vhost>.dept.<code>, <vhost>.gridflow-<service>.",
    )
    bu.add_argument("--admin-url", metavar="URL",
                    default=os.environ.get("GRIDFLOW_RABBIT_ADMIN_URL"),
                    help="management API with an administrator's credentials (default "
                    "$GRIDFLOW_RABBIT_ADMIN_URL, else http://<AMQP_URI's user:password>@<its "
                    "host>:15672, i.e. http://guest:guest@127.0.0.1:15672)")
    bu.add_argument("--vhost", help="the vhost (default: AMQP_URI's, /)")
    bu.add_argument("--secrets", metavar="FILE", help="the passwords file (default "
                    "<GRIDFLOW_VAR_DIR>/secrets/broker-users.json, mode 0600)")
    bu.add_argument("--prefix", help="before every user name (default: none in vhost /, "
                    "'<vhost>.' in any other)")
    bu.add_argument("--rotate", action="store_true",
                    help="new passwords for every user (the old ones stop working)")
    bu.add_argument("--show-passwords", action="store_true",
                    help="print the passwords in the table")
    return p


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        extra = ["--config", args.config] if args.config else []
        cmd = [sys.executable, "-m", "gridflow.run_service", args.service, *extra]
        os.execv(sys.executable, cmd)
    if args.command == "up":
        from gridflow import supervisor

        return supervisor.main(args)
    if args.command == "subscribe":
        from gridflow import department_client

        return department_client.main(args)
    if args.command == "respond":
        from gridflow import respond

        return respond.main(args)
    if args.command == "simulate":
        from gridflow import simulator

        return simulator.main(args)
    if args.command == "topology":
        return _topology(args.amqp_uri)
    if args.command in ("keys", "audit"):
        from gridflow import keys_cli

        return keys_cli.main(args)
    if args.command == "broker-users":
        from gridflow import broker_users

        return broker_users.main(args)
    return 2


def _topology(amqp_uri: str) -> int:
    import kombu

    from shared.amqp import topology
    from shared.config import Settings
    from shared.reference import load_reference

    departments = sorted(load_reference(Settings.from_config({}).data_dir).catalogue.departments)
    with kombu.Connection(amqp_uri, connect_timeout=5) as conn:
        topology.declare(conn.channel(), departments)
    for spec in topology.queues(departments):
        print(spec.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
