"""Delete the RabbitMQ vhosts that test runs left behind (``nameko_test_*``) and that no
connection uses any more, and the broker users of test vhosts that are gone
(``nameko_test_*.…``): ``.venv/bin/python tests/clean_vhosts.py``.

A test run that was killed leaves its vhost; each one holds quorum queues, and with a few
dozen of them RabbitMQ 3.10 runs out of file handles and hangs on creating the next vhost.
``deploy/test.sh`` runs this before the tests.
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import quote

import requests

PREFIX = "nameko_test_"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--api", default="http://127.0.0.1:15672", help="management API")
    ap.add_argument("--user", default="guest")
    ap.add_argument("--password", default="guest")
    args = ap.parse_args(argv)
    auth = (args.user, args.password)
    try:
        vhosts = requests.get(f"{args.api}/api/vhosts", auth=auth, timeout=10).json()
        busy = {c["vhost"] for c in
                requests.get(f"{args.api}/api/connections", auth=auth, timeout=10).json()}
    except (requests.RequestException, ValueError) as exc:
        print(f"cannot list vhosts at {args.api}: {exc}", file=sys.stderr)
        return 1
    stale = [v["name"] for v in vhosts if v["name"].startswith(PREFIX) and v["name"] not in busy]
    for name in stale:
        requests.delete(f"{args.api}/api/vhosts/{name}", auth=auth, timeout=60)
    print(f"removed {len(stale)} stale test vhost(s)")
    # Broker users provisioned in a test vhost are named after it (<vhost>.dept.fire, …).
    # Users first, then vhosts: a user listed has its vhost listed too, unless it is gone.
    try:
        users = requests.get(f"{args.api}/api/users", auth=auth, timeout=10).json()
        left = {v["name"] for v in
                requests.get(f"{args.api}/api/vhosts", auth=auth, timeout=10).json()}
    except (requests.RequestException, ValueError) as exc:
        print(f"cannot list users at {args.api}: {exc}", file=sys.stderr)
        return 1
    orphans = [u["name"] for u in users if u["name"].startswith(PREFIX)
               and u["name"].split(".", 1)[0] not in left]
    for name in orphans:
        requests.delete(f"{args.api}/api/users/{quote(name, safe='')}", auth=auth, timeout=10)
    print(f"removed {len(orphans)} broker user(s) of test vhosts gone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
