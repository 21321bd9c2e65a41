"""shared.access on its own: keys, the role table (and the README's copy of it), scopes and
the rate limit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared import access
from shared.access import AccessDenied, Principal

README = Path(__file__).resolve().parents[2] / "README.md"


def test_a_new_key_parses_back_and_only_its_hash_is_kept() -> None:
    new = access.new_key()
    key_id, secret = access.parse_key(new.token)
    assert key_id == new.key_id and secret not in new.secret_hash
    assert access.secret_matches(secret, new.secret_hash)
    assert not access.secret_matches(secret + "x", new.secret_hash)
    assert access.new_key().token != new.token


@pytest.mark.parametrize("token", ["", "gfk_", "gfk_0123_secretsecretsecretsecretsecret",
                                   "gfk_0123456789ab_short", "xyz_0123456789ab_" + "a" * 43,
                                   "gfk_0123456789AB_" + "a" * 43, "gfk_0123456789ab_" + "é" * 43])
def test_what_is_not_a_key_is_a_401(token: str) -> None:
    with pytest.raises(AccessDenied) as e:
        access.parse_key(token)
    assert e.value.status == 401 and "gfk_" in e.value.reason


@pytest.mark.parametrize(("authorization", "x_api_key", "ok"), [
    ("Bearer abc", None, "abc"), ("bearer  abc ", None, "abc"), (None, "abc", "abc"),
    ("Basic abc", None, None), ("Bearer ", None, None), (None, None, None),
])
def test_the_key_comes_from_a_bearer_header_or_x_api_key(
    authorization: str | None, x_api_key: str | None, ok: str | None
) -> None:
    if ok is None:
        with pytest.raises(AccessDenied) as e:
            access.token_from(authorization, x_api_key)
        assert e.value.status == 401
    else:
        assert access.token_from(authorization, x_api_key) == ok


def test_role_and_scope_fields_go_together() -> None:
    assert access.check_scope_fields("department", None, "fire") is None
    assert access.check_scope_fields("patrol_app", "511802001", None) is None
    assert access.check_scope_fields("operator", None, None) is None
    assert "department" in access.check_scope_fields("department", None, None)
    assert access.check_scope_fields("operator", None, "fire")
    assert access.check_scope_fields("admin", "511802", None)
    assert access.check_scope_fields("root", None, None)


def test_a_role_outside_an_action_is_refused_naming_who_may() -> None:
    p = Principal("k", "app", "patrol_app")
    access.allow(p, "report.create")
    with pytest.raises(AccessDenied) as e:
        access.allow(p, "case.operate")
    assert e.value.status == 403 and "operator, admin only" in e.value.reason


def test_scopes() -> None:
    path = ["511802", "511802001", "511802001001"]
    access.in_grid(Principal("k", "c", "patrol_app", grid="511802001"), path, "x")
    access.in_grid(Principal("k", "c", "admin"), path, "x")
    with pytest.raises(AccessDenied, match="outside this key's grid 511802002"):
        access.in_grid(Principal("k", "c", "operator", grid="511802002"), path, "case 1")
    fire = Principal("k", "c", "department", department="fire")
    access.for_department(fire, "fire")
    access.for_department(Principal("k", "c", "operator"), "police")
    with pytest.raises(AccessDenied, match="fire, not police"):
        access.for_department(fire, "police")
    access.on_case(fire, path, ["fire", "police"], "c1")
    with pytest.raises(AccessDenied, match="no assignment for department fire"):
        access.on_case(fire, path, ["police"], "c1")
    community = Principal("k", "c", "operator", grid="511802001001")
    access.speaks_for(community, path, "511802001001")
    with pytest.raises(AccessDenied, match="not for 511802001"):
        access.speaks_for(community, path[:2], "511802001")


def test_the_rate_limit_refills_over_the_minute() -> None:
    now = [0.0]
    limiter = access.RateLimiter(clock=lambda: now[0])
    for _ in range(3):
        limiter.take("k", 3)
    with pytest.raises(AccessDenied) as e:
        limiter.take("k", 3)
    assert e.value.status == 429 and e.value.retry_after == pytest.approx(20.0)
    limiter.take("other", 3)  # a bucket per key
    now[0] = 20.0
    limiter.take("k", 3)
    for _ in range(100):
        limiter.take("k", 0)  # 0: unlimited


def test_the_readme_table_of_roles_and_actions_is_the_code_s() -> None:
    """The README's roles × actions table says what ``shared.access.ACTIONS`` does."""
    text = README.read_text()
    start = text.index("| action | what | patrol_app | department | operator | admin |")
    block = text[start:text.index("\n\n", start)]
    rows = re.findall(r"^\| `([a-z.]+)` \| (.+?) \| (.+) \|$", block, re.M)
    table = {a: (what, [c.strip() for c in cells.split("|")]) for a, what, cells in rows}
    assert set(table) == set(access.ACTIONS)
    for action, (what, roles) in access.ACTIONS.items():
        assert table[action][0] == what, action
        marks = ["✓" if r in roles else "—" for r in access.ROLES]
        assert table[action][1] == marks, action
