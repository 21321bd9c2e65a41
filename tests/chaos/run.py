"""The chaos run, as a command: ``.venv/bin/python tests/chaos/run.py --help``.

Posts reports at a steady rate to the four services (real processes under gridflow's
supervisor, on a throwaway vhost and database) while it kills each service with SIGKILL,
restarts RabbitMQ and injects poison on every queue; then checks from the departments'
side and from the databases that nothing was lost or doubled, and prints a table.
Exit status 0 when the verdict is PASS. RabbitMQ restarts need ``rabbitmqctl`` (root).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

# tests/support (the run's API key) imports nameko's testing helpers, and they eventlet
warnings.filterwarnings("ignore", message="(?s).*Eventlet is deprecated")

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # support: the API key
sys.path.insert(0, str(Path(__file__).resolve().parent))

from databases import drop_database, fresh_database  # noqa: E402
from harness import ChaosRun, Plan  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def main(argv: list[str] | None = None) -> int:
    plan = Plan()
    ap = argparse.ArgumentParser(prog="tests/chaos/run.py", description=__doc__.split("\n\n")[1])
    ap.add_argument("--reports", type=int, default=plan.reports,
                    help="reports to post (default %(default)s)")
    ap.add_argument("--rate", type=float, default=plan.rate,
                    help="reports per second (default %(default)s)")
    ap.add_argument("--faults", default=",".join(plan.faults),
                    help="faults in order, spread over the run: a service name (kill -9), "
                         "'broker' (restart RabbitMQ) or 'poison' (default %(default)s)")
    ap.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--pg-admin-url", default=PG_ADMIN,
                    help="where to create the run's PostgreSQL database (default %(default)s)")
    ap.add_argument("--settle-timeout", type=float, default=plan.settle_timeout_s,
                    help="seconds to wait for the system to drain after posting")
    ap.add_argument("--seed", type=int, default=plan.seed)
    ap.add_argument("--keep", action="store_true", help="keep the run's directory (logs, DBs)")
    args = ap.parse_args(argv)

    db_url = fresh_database(args.pg_admin_url) if args.database == "postgresql" else None
    plan = Plan(reports=args.reports, rate=args.rate,
                faults=tuple(f for f in args.faults.split(",") if f),
                database_url=db_url, settle_timeout_s=args.settle_timeout, seed=args.seed)
    run = ChaosRun(plan)
    try:
        verdict = run.run()
    finally:
        if db_url:
            drop_database(args.pg_admin_url, db_url)
    print(verdict.table())
    if verdict.problems:
        print(f"\nlogs: {run.var_dir / 'log'}")
    elif not args.keep:
        import shutil

        shutil.rmtree(run.dir, ignore_errors=True)
    return 1 if verdict.problems else 0


if __name__ == "__main__":
    sys.exit(main())
