"""What each RabbitMQ user of gridflow may do: pure data, no I/O.

RabbitMQ checks three regular expressions per user and vhost (``configure``, ``write``,
``read``) against the names of the exchanges and queues an operation touches, and, on
topic exchanges, a ``write`` and a ``read`` expression per exchange against the routing key
of a publish (write) and the binding key of a queue.bind (read). An exchange without a topic
permission of the user's is not restricted by routing key.

**A department** (``dept.<code>``) may do exactly two things: read its own queue
``dispatch.<code>`` and publish its answers on ``gridflow.responses`` with routing keys
``<code>.…``. It declares nothing (a passive declare, which the reference client does,
needs no permission), cannot read another department's queue, cannot publish on
``gridflow.dispatch`` or the default exchange, and cannot answer as another department.

**A service** (``gridflow-<service>``) declares the whole topology at start
(``shared.amqp.topology.declare``): that needs configure, write and read on every
``gridflow.*`` and ``dispatch.*`` name (a queue.bind needs write on the queue and read on the
exchange; a queue with a dead-letter exchange needs read on itself and write on that
exchange: the retry queues dead-letter through the default exchange, ``amq.default``,
which is how the monitor replays dead letters too). Its nameko RPC names are its own only:
the ``nameko-rpc`` exchange, its queue ``rpc-<service>`` and its reply queues
``rpc.reply-<service>-<uuid>``. By routing key, only notify publishes on
``gridflow.dispatch``, no service answers as a department on ``gridflow.responses``, and
each service beats on ``gridflow.heartbeats`` as itself (``<service>.<instance>``). No
user here is an ``administrator``; the monitor's is ``monitoring`` (queue figures from the
management API).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from shared.amqp.topology import (
    DISPATCH_EXCHANGE,
    HEARTBEATS_EXCHANGE,
    RESPONSES_EXCHANGE,
    dispatch_queue,
)

DEPARTMENT = "department"
SERVICE = "service"
NOTHING = "^$"  # matches no name (names are never empty; the default exchange is amq.default)
ANYTHING = ".*"
RPC_EXCHANGE = "nameko-rpc"  # nameko's default rpc_exchange
DEFAULT_EXCHANGE = "amq.default"  # the name RabbitMQ checks for the default exchange ("")
# Services that publish dispatches to departments and grid tiers (routing key is free).
DISPATCHERS = frozenset({"notify"})
MONITORING = "monitoring"  # management API: queue figures, no administration


def department_user(code: str, prefix: str = "") -> str:
    return f"{prefix}dept.{code}"


def service_user(service: str, prefix: str = "") -> str:
    return f"{prefix}gridflow-{service}"


def default_prefix(vhost: str) -> str:
    """User names are global in RabbitMQ, permissions are per vhost: users of gridflow in
    the default vhost ``/`` have plain names, those of any other vhost are qualified by it
    (``<vhost>.dept.fire``), so that two gridflows on one broker (a test vhost next to the
    demo) never reset each other's passwords."""
    return "" if vhost in ("", "/") else f"{vhost}."


def _one_of(*patterns: str) -> str:
    return "^(" + "|".join(patterns) + ")$"


@dataclass(frozen=True)
class TopicGrant:
    """Routing keys a user may publish (``write``) and bind (``read``) on one topic exchange."""

    exchange: str
    write: str
    read: str

    def as_json(self) -> dict[str, str]:
        return {"exchange": self.exchange, "write": self.write, "read": self.read}


@dataclass(frozen=True)
class Grant:
    """One broker user and everything it may do in the vhost."""

    name: str
    role: str  # DEPARTMENT or SERVICE
    subject: str  # the department code or the service name
    tags: tuple[str, ...]
    configure: str
    write: str
    read: str
    topics: tuple[TopicGrant, ...] = ()
    reads: str = ""  # in words, for the table `gridflow broker-users` prints
    publishes: str = ""

    def permissions(self) -> dict[str, str]:
        return {"configure": self.configure, "write": self.write, "read": self.read}


def department_grant(code: str, prefix: str = "") -> Grant:
    own = re.escape(code)
    return Grant(
        name=department_user(code, prefix),
        role=DEPARTMENT,
        subject=code,
        tags=(),
        configure=NOTHING,
        write="^" + re.escape(RESPONSES_EXCHANGE) + "$",
        read="^" + re.escape(dispatch_queue(code)) + "$",
        topics=(TopicGrant(RESPONSES_EXCHANGE, write=f"^{own}\\.", read=NOTHING),),
        reads=dispatch_queue(code),
        publishes=f"{RESPONSES_EXCHANGE} {code}.<action>",
    )


def service_names_pattern(service: str) -> list[str]:
    """The names a service declares, binds, reads and publishes to (see the module doc)."""
    own = re.escape(service)
    return [
        r"gridflow\..+",
        r"dispatch\..+",
        re.escape(RPC_EXCHANGE),
        f"rpc-{own}",
        rf"rpc\.reply-{own}-.+",
    ]


def service_grant(service: str, prefix: str = "") -> Grant:
    names = service_names_pattern(service)
    dispatches = service in DISPATCHERS
    return Grant(
        name=service_user(service, prefix),
        role=SERVICE,
        subject=service,
        tags=(MONITORING,) if service == "monitor" else (),
        configure=_one_of(*names),
        write=_one_of(*names, re.escape(DEFAULT_EXCHANGE)),
        read=_one_of(*names),
        topics=(
            TopicGrant(DISPATCH_EXCHANGE, write=ANYTHING if dispatches else NOTHING,
                       read=ANYTHING),
            TopicGrant(RESPONSES_EXCHANGE, write=NOTHING, read=ANYTHING),
            TopicGrant(HEARTBEATS_EXCHANGE, write=f"^{re.escape(service)}\\.", read=ANYTHING),
        ),
        reads=f"gridflow.*, dispatch.*, rpc-{service}, rpc.reply-{service}-*",
        publishes=(f"gridflow.* ({'' if dispatches else 'not on gridflow.dispatch, '}"
                   f"not on gridflow.responses, heartbeats {service}.*), amq.default, "
                   "nameko-rpc"),
    )


def grants(departments: Iterable[str], services: Iterable[str], prefix: str = "") -> list[Grant]:
    """Every user: the services' first, then one per department (sorted, no duplicates)."""
    return [
        *(service_grant(s, prefix) for s in dict.fromkeys(services)),
        *(department_grant(d, prefix) for d in sorted(set(departments))),
    ]
