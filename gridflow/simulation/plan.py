"""What the simulated district does next, and when. Pure: no I/O, no clock of its own.

The caller passes ``now``, a real monotonic time in seconds. The schedule is kept in real
seconds; people's delays are drawn in *demo* time (a department reports in 5–40 demo
minutes after its assignment) and divided by ``speed`` (demo seconds per real second) into
real time. Deadlines in messages are demo instants; they become real times through the
demo time at ``now`` (``demo_now``, the services' clock when known, else the message's
``occurred_at``). Every random choice comes from one seeded ``random.Random``.

The actors (``actors.py``) carry out what ``due`` returns and hand each outcome back to
``after``, which plans what follows (a department that reported in resolves later; a
passed verification closes the case and its reporters rate it …).
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from . import texts
from .model import MINUTE, Action, Outcome, Schedule, Stats, Tunables
from .reporters import Reporters
from .world import World

__all__ = ["Action", "Outcome", "Schedule", "Simulation", "Stats", "Tunables"]

WHISTLE_TIERS = ("community", "street")
_NS = uuid.UUID("a4f1f3de-3c55-4d0e-9b1e-6b2f4c1d9e77")


class Simulation:
    """The district's people: reporters, departments, grid workers, communities."""

    def __init__(
        self,
        world: World,
        *,
        speed: float = 1.0,
        tunables: Tunables | None = None,
        seed: int | None = None,
        run_id: str = "sim",
        demo_now: Callable[[], datetime] | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.world = world
        self.speed = float(speed)
        self.tun = tunables or Tunables()
        self.rng = random.Random(seed)
        self.run_id = run_id
        self.demo_now = demo_now
        self.schedule = Schedule()
        self.stats = Stats()
        depts = sorted(world.departments)
        self.amqp_departments = frozenset(self.rng.sample(depts, round(self.tun.amqp * len(depts))))
        self.reporters = Reporters(world, self.rng, self.tun, run_id)
        self._chain_seq = itertools.count(1)
        self._chains: dict[tuple[str, str], int] = {}
        self._resolve_by: dict[int, float] = {}  # chain -> real time of its resolve deadline
        self._category_of: dict[str, str] = {}  # case -> category code
        self._assigned_before: set[tuple[str, str]] = set()
        self._whistled: set[str] = set()
        self._escalated: set[str] = set()
        self._reminded: set[str] = set()
        self._rated: set[tuple[str, str]] = set()
        self._seen: OrderedDict[str, None] = OrderedDict()

    def message_id(self, action: Action) -> str:
        """The id of a department's answer over AMQP: the same for a retry of the same
        answer (gridflow handles it once), different for every run."""
        return str(uuid.uuid5(_NS, f"{self.run_id}/{action.kind}/{action.case_id}/"
                                   f"{action.department}/{action.chain}"))

    # -- time --------------------------------------------------------------------------------
    def real(self, demo_seconds: float) -> float:
        """Real seconds for a span of demo time."""
        return demo_seconds / self.speed

    def delay(self, minutes: tuple[float, float]) -> float:
        """A random delay, drawn in demo minutes, in real seconds."""
        return self.real(self.rng.uniform(*minutes) * MINUTE)

    def gap(self) -> float:
        """Real seconds to the next report (a Poisson stream of ``rate`` a real minute)."""
        return self.rng.expovariate(self.tun.rate / MINUTE)

    def _until(self, due: Any, ref: datetime | None) -> float | None:
        """Real seconds from now until the demo instant ``due`` (None if unknown)."""
        if not due or ref is None:
            return None
        try:
            when = datetime.fromisoformat(str(due))
        except ValueError:
            return None
        if when.tzinfo is None:
            return None
        return self.real((when - ref).total_seconds())

    def _ref(self, msg: Mapping[str, Any]) -> datetime | None:
        """The demo time now: the services' clock when known, else the message's time."""
        if self.demo_now is not None:
            return self.demo_now()
        try:
            at = datetime.fromisoformat(str(msg.get("occurred_at")))
        except ValueError:
            return None
        return at if at.tzinfo is not None else None

    # -- the plan ------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """The first report goes out at once: the district has life from the first minute."""
        if self.tun.rate > 0:
            self.schedule.add(now, Action("report"))

    def due(self, now: float) -> list[Action]:
        """What is to be done now. Reports are written as they fall due (a duplicate repeats
        what was reported recently) and the next one is scheduled."""
        out: list[Action] = []
        for at, action in self.schedule.pop_due(now):
            if action.kind == "report":
                out.append(self.reporters.write())
                self.schedule.add(max(at, now - 1.0) + self.gap(), Action("report"))
            elif action.chain and self._chains.get((action.case_id, action.department)) \
                    != action.chain:
                self.stats.superseded += 1
            else:
                out.append(action)
        return out

    def _at(self, when: float, action: Action) -> None:
        self.schedule.add(when, action)

    def _new_chain(self, key: tuple[str, str]) -> int:
        chain = next(self._chain_seq)
        self._chains[key] = chain
        return chain

    def _via(self, department: str) -> str:
        return "amqp" if department in self.amqp_departments else "http"

    # -- what arrives on the queues ------------------------------------------------------------
    def on_message(self, msg: Mapping[str, Any], now: float, message_id: str = "") -> None:
        """A message from ``dispatch.<department>`` or ``dispatch.tier.<tier>``: plan what its
        recipient does. A message id seen before is dropped."""
        mid = message_id or str(msg.get("event_id") or "")
        if mid:
            if mid in self._seen:
                return
            self._seen[mid] = None
            if len(self._seen) > 100_000:
                self._seen.popitem(last=False)
        self.stats.messages += 1
        data = msg.get("data") or {}
        case_id = str(msg.get("case_id") or "")
        if not case_id or not isinstance(data, Mapping):
            return
        to_tier = (data.get("recipient") or {}).get("kind") == "tier"
        kind = msg.get("type")
        if kind == "case.assigned" and not to_tier:
            self._assigned(case_id, data, now, self._ref(msg))
        elif kind == "case.reworked" and not to_tier:
            self._reworked(case_id, data, now)
        elif kind == "task.assigned":
            self._task(case_id, data, now)
        elif kind in ("case.escalated", "case.reminded"):
            seen = self._escalated if kind == "case.escalated" else self._reminded
            if case_id not in seen:
                seen.add(case_id)
                if kind == "case.escalated":
                    self.stats.escalated += 1
                else:
                    self.stats.reminded += 1
            if to_tier:
                self._maybe_whistle(case_id, data, now)
        elif kind == "case.needs_dispatch" and to_tier:
            self._dispatch_by_hand(case_id, data, now)

    def _assigned(self, case_id: str, data: Mapping[str, Any], now: float,
                  ref: datetime | None) -> None:
        a = data.get("assignment") or {}
        dept = str(data.get("department") or a.get("department") or "")
        if not dept:
            return
        key = (case_id, dept)
        self._category_of[case_id] = str((data.get("case") or {}).get("category") or "")
        again = key in self._assigned_before
        self._assigned_before.add(key)
        chain = self._new_chain(key)
        self.stats.assigned += 1
        report_in_left = self._until(a.get("report_in_due"), ref)
        resolve_left = self._until(a.get("resolve_due"), ref)
        if resolve_left is not None:
            self._resolve_by[chain] = now + resolve_left
        rng = self.rng
        if not again and a.get("role") in ("lead", "assist") and rng.random() < self.tun.returns:
            code, note = self._return_reason()
            self._at(now + self.delay(self.tun.return_after), Action(
                "return", case_id, dept, {"reason_code": code, "note": note,
                                          "actor": f"{dept}值班员"},
                self._via(dept), chain=chain))
            return
        late = rng.random() < self.tun.late and report_in_left is not None
        self._plan_ack(case_id, dept, chain, now, report_in_left, late)

    def _plan_ack(self, case_id: str, dept: str, chain: int, now: float,
                  report_in_left: float | None, late: bool) -> None:
        if late and report_in_left is not None:
            wait = max(report_in_left, 0.0) + self.delay(self.tun.late_by)
        else:
            wait = self.delay(self.tun.report_in)
            if report_in_left is not None and report_in_left > 0:
                wait = min(wait, 0.8 * report_in_left)
        body = {"actor": f"{dept}值班员"}
        note = self.rng.choice(texts.ACK_NOTES)
        if note:
            body["note"] = note
        self._at(now + wait, Action("ack", case_id, dept, body, self._via(dept), chain=chain,
                                    late=late))

    def _return_reason(self) -> tuple[str, str]:
        reasons = texts.RETURN_REASONS
        code, _, note = self.rng.choices(reasons, weights=[r[1] for r in reasons])[0]
        return code, note

    def _reworked(self, case_id: str, data: Mapping[str, Any], now: float) -> None:
        """返工: the department reports in again and resolves again."""
        dept = str(data.get("department") or "")
        if not dept:
            return
        chain = self._new_chain((case_id, dept))
        self._plan_ack(case_id, dept, chain, now, None, late=False)

    def _task(self, case_id: str, data: Mapping[str, Any], now: float) -> None:
        task = data.get("task") or {}
        assignee = task.get("assignee") or (data.get("recipient") or {}).get("tier") or {}
        owner = assignee.get("owner") or {}
        if not task.get("id") or not assignee.get("code"):
            return
        by = {"name": owner.get("name") or assignee.get("name") or "网格员",
              "tier": assignee.get("tier") or "compound", "code": assignee["code"]}
        rng = self.rng
        if task.get("kind") == "verification":
            passed = rng.random() >= self.tun.verify_fail
            body = {"passed": passed, "by": by,
                    "media_urls": [f"https://photos.gridflow.example/sim/{case_id}-"
                                   f"verify-{task['id']}.jpg"],
                    "note": rng.choice(texts.VERIFY_PASSED if passed else texts.VERIFY_FAILED)}
            self._at(now + self.delay(self.tun.verify),
                     Action("verify", case_id, body=body, task_id=int(task["id"])))
        elif task.get("kind") == "follow_up":
            body = {"by": by, "note": rng.choice(texts.FOLLOW_UP_NOTES)}
            self._at(now + self.delay(self.tun.follow_up),
                     Action("follow_up", case_id, body=body, task_id=int(task["id"])))

    def _maybe_whistle(self, case_id: str, data: Mapping[str, Any], now: float) -> None:
        """A community or street told of an escalation sometimes blows the whistle (吹哨)."""
        node = (data.get("recipient") or {}).get("tier") or {}
        if (node.get("role") != "owner" or node.get("tier") not in WHISTLE_TIERS
                or not node.get("code") or case_id in self._whistled):
            return
        if self.rng.random() >= self.tun.whistle:
            return
        self._whistled.add(case_id)
        category = self.world.categories.get(str((data.get("case") or {}).get("category")))
        on_case = set(category.departments) if category else set()
        pool = [d for d in texts.SUMMONABLE if d in self.world.departments and d not in on_case]
        pool = pool or [d for d in self.world.departments if d not in on_case]
        if not pool:
            return
        owner = node.get("owner") or {}
        body = {
            "level": "hard" if self.rng.random() < self.tun.hard else "routine",
            "departments": self.rng.sample(pool, min(len(pool), self.rng.choice((1, 1, 2)))),
            "by": {"name": owner.get("name") or node.get("name") or "值班员",
                   "tier": node["tier"], "code": node["code"]},
            "reason": self.rng.choice(texts.WHISTLE_REASONS),
        }
        self._at(now + self.delay(self.tun.whistle_after), Action("whistle", case_id, body=body))

    def _dispatch_by_hand(self, case_id: str, data: Mapping[str, Any], now: float) -> None:
        """Every candidate returned it: the tier's owner orders the department that returned
        it last back onto the case by hand (指派), in the role it had."""
        node = (data.get("recipient") or {}).get("tier") or {}
        if not node.get("code") or not node.get("tier"):
            return
        returned = data.get("returned") or {}
        dept = str(returned.get("department") or "")
        role = "lead" if returned.get("role", "lead") == "lead" else "assist"
        if not dept:
            category = self.world.categories.get(str((data.get("case") or {}).get("category")))
            if category is None:
                return
            dept, role = category.lead, "lead"
        owner = node.get("owner") or {}
        body = {"department": dept, "role": role,
                "by": {"name": owner.get("name") or node.get("name") or "值班员",
                       "tier": node["tier"], "code": node["code"]},
                "note": "无其他部门可承接，网格中心指派"}
        self._at(now + self.delay(self.tun.dispatch_after), Action("dispatch", case_id, body=body))

    # -- what came of an action ----------------------------------------------------------------
    def after(self, action: Action, outcome: Outcome, now: float) -> None:
        s = self.stats
        if not outcome.ok:
            s.errors += 1
            if outcome.status == 409:
                s.conflicts += 1
            elif 400 <= outcome.status < 500:
                s.rejected += 1
            elif outcome.status >= 500:
                s.server_errors += 1
            else:
                s.unreachable += 1
            return
        body = outcome.body if isinstance(outcome.body, Mapping) else {}
        kind = action.kind
        if kind == "report":
            s.reports += 1
            if body.get("duplicate_of"):
                s.duplicates += 1
            elif body.get("created", True):
                self.reporters.remember(action.body)
        elif kind == "ack":
            s.acked += 1
            s.late += action.late
            self._plan_resolve(action, now)
        elif kind == "progress":
            s.progress += 1
        elif kind == "resolve":
            s.resolved += 1
        elif kind == "return":
            s.returned += 1
        elif kind == "verify":
            s.verified += 1
            if not action.body.get("passed"):
                s.failed += 1
            elif body.get("state") == "closed":
                s.closed += 1
                self._plan_ratings(action.case_id, body, now)
        elif kind == "rate":
            s.rated += 1
            s.unhappy += action.body.get("score", 5) <= 2
        elif kind == "follow_up":
            s.followups += 1
        elif kind == "whistle":
            s.whistles += 1
        elif kind == "dispatch":
            s.by_hand += 1

    def _plan_resolve(self, ack: Action, now: float) -> None:
        """After reporting in: maybe progress, then resolve — before the resolve deadline
        unless the department is one of the late ones."""
        wait = self.delay(self.tun.resolve)
        deadline = self._resolve_by.get(ack.chain)
        if deadline is not None and not ack.late and deadline - now > self.real(10 * MINUTE):
            wait = min(wait, 0.9 * (deadline - now))
        rng = self.rng
        dept, via, chain = ack.department, ack.via, ack.chain
        if rng.random() < self.tun.progress:
            self._at(now + wait * rng.uniform(0.3, 0.7), Action(
                "progress", ack.case_id, dept,
                {"note": rng.choice(texts.PROGRESS_NOTES), "actor": f"{dept}值班员"}, via,
                chain=chain))
        category = self._category_of.get(ack.case_id, "")
        note = rng.choice(texts.RESOLVE_NOTES.get(category, texts.GENERIC_RESOLVE))
        self._at(now + wait, Action(
            "resolve", ack.case_id, dept,
            {"note": note, "actor": f"{dept}值班员",
             "media_urls": [f"https://photos.gridflow.example/sim/{ack.case_id}-{dept}.jpg"]},
            via, chain=chain))

    def _plan_ratings(self, case_id: str, view: Mapping[str, Any], now: float) -> None:
        """The case is closed: its reporter, and the reporters of its duplicates, may rate."""
        raters = [((view.get("reporter") or {}).get("id") or "")]
        raters += [((f.get("reporter") or {}).get("id") or "")
                   for f in view.get("followers") or () if isinstance(f, Mapping)]
        rng = self.rng
        for rid in dict.fromkeys(r for r in raters if r):
            if (case_id, rid) in self._rated or rng.random() >= self.tun.rates:
                continue
            self._rated.add((case_id, rid))
            unhappy = rng.random() < self.tun.unhappy
            score = rng.choice((1, 2)) if unhappy else rng.choice((4, 5, 5))
            body = {"score": score, "fixed": not unhappy, "reporter_id": rid,
                    "comment": rng.choice(texts.RATING_BAD if unhappy else texts.RATING_GOOD)}
            self._at(now + self.delay(self.tun.rate_after), Action("rate", case_id, body=body))
