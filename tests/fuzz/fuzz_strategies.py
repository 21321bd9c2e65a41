"""Hypothesis strategies for fuzzing gridflow's front doors: odd values, mutations of a valid
JSON body, raw bodies that are not JSON at all, query strings and path segments.

A strategy that wants a piece of JSON text that Python's encoder cannot write (a number of
5,000 digits, nesting 20,000 deep) puts a ``Raw`` in the value; ``encode`` writes it as is.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

SCALE = float(os.environ.get("GRIDFLOW_FUZZ_SCALE", "1"))  # more examples: GRIDFLOW_FUZZ_SCALE=10


def fuzz_settings(examples: int) -> settings:
    """Reproducible (derandomized, no example database), quiet unless something fails."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )


@dataclass(frozen=True)
class Raw:
    """JSON text written verbatim into an encoded body."""

    text: str


def deep(depth: int, open_: str = "[", close: str = "]") -> Raw:
    return Raw(open_ * depth + close * depth)


# -- odd values -------------------------------------------------------------------------------
SPECIAL_TEXT: tuple[str, ...] = (
    "",
    " ",
    "\t\n\r",
    "\x00",
    "a\x00b",
    "\x01\x02\x1b[31m\x7f",
    "\ud800",  # a lone surrogate: not encodable as UTF-8
    "x\udfffy",
    "\u202eevil\u202c",
    "\ufeff",
    "\u200b",
    "𝕏🚒🧯",
    "消防通道被堵塞" * 3,
    "１２３４５６",  # fullwidth digits
    "٣٤٥",  # Arabic-Indic digits
    "../../../etc/passwd",
    "%00%ff%2e%2e",
    "' OR 1=1 --",
    "\"; DROP TABLE cases; --",
    "${jndi:ldap://x}",
    "{{7*7}}",
    "%s%n%x",
    "<script>alert(1)</script>",
    "null",
    "NaN",
    "-1",
    "0",
    "1e309",
    "9" * 30,
    "x" * 65,
    "x" * 101,
    "y" * 2001,
    "z" * 70_000,
    "\\",
    "/",
    ".",
    "..",
)

BAD_DATES: tuple[Any, ...] = (
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59.999999+00:00",
    "2026-13-45T25:61:61Z",
    "2026-02-30T09:00:00+08:00",
    "2026-11-23T09:00:00",  # naive
    "2026-11-23",
    "2026-11-23T09:00:00+25:00",
    "1970-01-01T00:00:00Z",
    "2200-01-01T00:00:00+08:00",
    "yesterday",
    "",
    1_700_000_000,
    -1,
)

ODD_NUMBERS: tuple[Any, ...] = (
    0,
    -1,
    1.5,
    -0.0,
    2**31,
    2**31 - 1,
    -(2**31) - 1,
    2**63,
    -(2**63) - 1,
    2**64,
    10**30,
    1e308,
    -1e308,
    5e-324,
    float("inf"),
    float("-inf"),
    float("nan"),
    Raw("1" + "0" * 5000),  # more digits than Python converts
    Raw("1e999"),
    Raw("-0"),
)


def odd_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(SPECIAL_TEXT),
        st.text(max_size=30),
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=80),
        st.text(st.characters(min_codepoint=0, max_codepoint=0x1F), max_size=8),
        st.builds(lambda c, n: c * n, st.sampled_from("x中\x00 "), st.integers(60, 3000)),
    )


def json_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(ODD_NUMBERS),
        odd_text(),
        st.sampled_from(BAD_DATES),
    )


def json_values() -> st.SearchStrategy[Any]:
    """Any JSON value (and a few that only Python's decoder takes: NaN, Infinity)."""
    return st.recursive(
        json_scalars(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(odd_text(), inner, max_size=4),
        ),
        max_leaves=12,
    )


def odd_values() -> st.SearchStrategy[Any]:
    return st.one_of(
        json_scalars(),
        json_values(),
        st.sampled_from([deep(5000), deep(200), Raw('{"a":' * 300 + "1" + "}" * 300)]),
        st.builds(lambda n: ["x"] * n, st.sampled_from([11, 21, 10_000])),
        st.just({}),
        st.just([]),
    )


# -- mutations of a valid body ------------------------------------------------------------------
def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value (dict keys and list indexes), the root included."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        value = value[p]
    return value


def _set(root: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    _get(root, path[:-1])[path[-1]] = new
    return root


@st.composite
def mutated(draw: Any, valid: dict[str, Any], field_names: tuple[str, ...] = ()) -> Any:
    """``valid`` with one to three things wrong: a field dropped, replaced by an odd value
    or a value of the wrong type, an unknown or optional field added, a value nested deep."""
    body: Any = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(body)
        path = draw(st.sampled_from(paths))
        target = _get(body, path)
        ops = ["replace", "wrap"]
        if path:
            ops.append("drop")
        if isinstance(target, dict):
            ops += ["add", "add"]
        op = draw(st.sampled_from(ops))
        if op == "replace":
            body = _set(body, path, draw(odd_values()))
        elif op == "wrap":
            body = _set(body, path, draw(st.sampled_from([[target], {"value": target}])))
        elif op == "drop":
            parent = _get(body, path[:-1])
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent.pop(path[-1])
        else:  # add a field: a known optional one, or an unknown one
            key = draw(st.one_of(st.sampled_from(field_names or ("x",)), odd_text()))
            target[key] = draw(odd_values())
    return body


@st.composite
def poisoned(draw: Any, valid: dict[str, Any]) -> Any:
    """``valid`` with its text (one field's, or all of it) replaced by odd text, or one of its
    numbers by an odd number: the shape stays right, the values are what is fuzzed."""
    body: Any = copy.deepcopy(valid)
    texts = [p for p in _paths(body) if isinstance(_get(body, p), str)]
    numbers = [p for p in _paths(body) if isinstance(_get(body, p), int | float)
               and not isinstance(_get(body, p), bool)]
    choice = draw(st.sampled_from(["one", "all", "number"] if numbers else ["one", "all"]))
    if choice == "number":
        return _set(body, draw(st.sampled_from(numbers)), draw(st.sampled_from(ODD_NUMBERS)))
    if not texts:
        return body
    if choice == "one" and draw(st.booleans()):  # near the valid value
        p = draw(st.sampled_from(texts))
        return _set(body, p, draw(near(_get(body, p))))
    text = draw(st.one_of(odd_text(), st.sampled_from([d for d in BAD_DATES
                                                         if isinstance(d, str)])))
    for p in (texts if choice == "all" else [draw(st.sampled_from(texts))]):
        body = _set(body, p, text)
    return body


def near(text: str) -> st.SearchStrategy[str]:
    """Text close to a valid value: padded, repeated, cased, with a NUL or a control
    character, with zeros in front, a digit changed, cut short."""
    return st.sampled_from([
        " " * 30 + text, text + " " * 30, text * 40, text.upper(), text.lower(), text + "\x00",
        "\x00" + text, text + "\n", text + "\u00a0", "0" * 20 + text, text[:-1], text[1:],
        text.replace("1", "\u0661"), text.replace("-", "\u2010"), text + "\ud800",
        text.replace("2026", "0001").replace("+00:00", "+14:00"),
        text.replace("2026", "9999").replace("+00:00", "-14:00"),
        "-" + text, text + ".5", text + "e3",
    ])


# -- encoding ---------------------------------------------------------------------------------
def encode(value: Any, *, ascii_only: bool = True) -> bytes:
    """JSON text of ``value``; ``Raw`` parts written verbatim. Without ``ascii_only`` the
    text is UTF-8 with lone surrogates written as they are (not valid UTF-8)."""
    raws: dict[str, str] = {}

    def swap(v: Any) -> Any:
        if isinstance(v, Raw):
            key = f"@@raw-{uuid.uuid4().hex}@@"
            raws[key] = v.text
            return key
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return v

    text = json.dumps(swap(value), ensure_ascii=ascii_only)
    for key, raw in raws.items():
        text = text.replace(json.dumps(key), raw)
    return text.encode("utf-8", "surrogatepass")


RAW_BODIES: tuple[bytes, ...] = (
    b"",
    b" ",
    b"{",
    b"}",
    b"{}{}",
    b"[]",
    b"null",
    b"true",
    b"0",
    b'"a string"',
    b"NaN",
    b"Infinity",
    b"1e999",
    b"\xff\xfe\x00{",
    b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
    b'{"a": "\xc3\x28"}',  # invalid UTF-8 inside a string
    b'{"a": "\\ud800"}',
    b'{"a": "\\u0000"}',
    b'{"a": 1, "a": 2}',
    b"{'single': 'quotes'}",
    b"[" * 100_000 + b"]" * 100_000,  # nesting deeper than the decoder's recursion limit
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b"[" * 200_000,  # larger than the body limit
    b"1" * 10_000,
    b"x" * 300_000,
    b"<xml/>",
    b"a=1&b=2",
)


def raw_bodies() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from(RAW_BODIES),
        st.binary(max_size=200),
        st.builds(lambda v, a: encode(v, ascii_only=a), json_values(), st.booleans()),
    )


# -- URLs ---------------------------------------------------------------------------------------
def path_segment(value: Any) -> str:
    """A path segment, percent-encoded (a lone surrogate as its invalid UTF-8 bytes)."""
    return quote(str(value).encode("utf-8", "surrogatepass"), safe="")


def odd_ids() -> st.SearchStrategy[str]:
    """Case ids, department codes and the like that name nothing, or are not names at all."""
    return st.one_of(
        st.sampled_from(["20991231-999999", "00000000-000000", "-1", "0", "null", "%",
                         "a b", "a/b", "a;b", "x" * 65, "x" * 5000, "\x00", "ä", "中文",
                         "\ud800", "20261123-000001\x00", " 20261123-000001",
                         "police.ack", "#", "*", "..."]),
        odd_text().filter(lambda s: s not in ("", ".", "..")),
    )


def odd_ints() -> st.SearchStrategy[str]:
    """What may stand where a route wants an ``<int:…>``."""
    return st.one_of(
        st.sampled_from(["0", "-1", "00001", str(2**31), str(2**63), str(2**64),
                         "9" * 40, "9" * 5000, "1.5", "1e3", "0x10", "١"]),
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
    )


def query_strings(known: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[str]:
    """A query string: known keys with good or odd values, unknown keys, repeats, raw
    percent-escapes (a NUL, invalid UTF-8)."""
    pair_value = st.one_of(odd_text(), st.sampled_from(["1", "0", "-1", "20", "101", "1e3",
                                                        "9" * 30, "true", ""]))

    def pairs_from(d: dict[str, Any]) -> list[tuple[str, Any]]:
        return list(d.items())

    known_pairs = (
        st.fixed_dictionaries({}, optional={k: st.one_of(v, pair_value)
                                            for k, v in known.items()}).map(pairs_from)
        if known else st.just([])
    )
    extra = st.lists(st.tuples(st.one_of(st.sampled_from(tuple(known) or ("x",)), odd_text()),
                               pair_value), max_size=3)

    def build(pairs: list[tuple[str, Any]], more: list[tuple[str, Any]]) -> str:
        return "&".join(f"{path_segment(k)}={path_segment(v)}" for k, v in [*pairs, *more])

    return st.one_of(
        st.builds(build, known_pairs, st.just([])),
        st.builds(build, known_pairs, extra),
        st.sampled_from(["%00=1", "page=%00", "state=%ff%fe", "page=1&page=2", "&&&", "=",
                         "page", "per_page=%2B1", "depth=-0", "code=%0a", "x=" + "y" * 20_000]),
    )
