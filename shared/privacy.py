"""Personal data masked: reporters' names and phones, and what looks like them in free text.

Pure functions, no I/O. Reporter names and phones are shown in full only to the roles that
need them; everywhere else — other API readers, the logs (``shared.logs.JsonFormatter``
runs every message and ``extra`` value through :func:`mask_text` / :func:`mask_value`),
stored error texts — they are masked:

- a CN mobile ``13812345678`` → ``138****5678`` (a ``+86`` prefix is kept); any other
  number keeps at most its last 4 digits (``02888881234`` → ``*******1234``);
- a name keeps its first character: ``张三丰`` → ``张**``, ``Li Wei`` → ``L*****``;
- in free text: CN mobile numbers (also written ``138 1234 5678`` or ``138-1234-5678``),
  ``+``-prefixed international numbers, landlines with an area code (``028-88881234``) and
  18-digit resident ID numbers (``511802199001011234`` → ``511***********1234``). Case ids
  (``20261123-000042``), grid codes and event ids are left alone.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

# keys whose value is a person's name or phone inside a reporter (any key path through a
# key containing "reporter"); phone keys are masked wherever they are
NAME_KEYS = frozenset({"name", "reporter_name"})
PHONE_KEYS = frozenset({"phone", "reporter_phone", "mobile"})
ALWAYS_PHONE_KEYS = frozenset({"phone", "mobile", "reporter_phone"})
ALWAYS_NAME_KEYS = frozenset({"reporter_name"})

_SEPARATORS = re.compile(r"[\s\-().]")
_CN_MOBILE = re.compile(r"^(\+?86|0086)?(1[3-9]\d{9})$")

_EDGE_L = r"(?<![0-9A-Za-z+])"
_EDGE_R = r"(?![0-9A-Za-z])"
_TEXT = re.compile(
    _EDGE_L + "(?:"
    # an 18-digit resident ID: area, birth date (18xx–20xx), sequence, check digit
    r"(?P<id>\d{6}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx])"
    # a CN mobile, optionally +86 / 0086, optionally grouped 3-4-4
    r"|(?P<mobile>(?:(?:\+|00)86[\s\-]?)?1[3-9]\d(?:[\s\-]?\d{4}){2})"
    # a landline with its area code
    r"|(?P<landline>0\d{2,3}-\d{7,8})"
    # an international number
    r"|(?P<intl>\+\d{1,3}[\s\-]?\d[\d\s\-]{5,16}\d)"
    ")" + _EDGE_R
)


def _digits(s: str) -> str:
    return _SEPARATORS.sub("", s)


def mask_phone(s: Any) -> str:
    """A phone number fit to show: ``13812345678`` → ``138****5678`` (``+86`` kept);
    another number keeps at most its last 4 digits (short ones fewer); empty stays empty."""
    if s is None:
        return ""
    p = _digits(str(s))
    if not p:
        return ""
    m = _CN_MOBILE.match(p)
    if m:
        prefix, mobile = m.group(1) or "", m.group(2)
        return f"{prefix}{mobile[:3]}****{mobile[-4:]}"
    plus = "+" if p.startswith("+") else ""
    body = p[len(plus):]
    if len(body) >= 8:
        keep = 4
    elif len(body) > 2:
        keep = 2
    else:
        keep = 0
    return plus + "*" * (len(body) - keep) + body[len(body) - keep:]


def mask_name(s: Any) -> str:
    """A name fit to show: its first character, the rest starred (``张三丰`` → ``张**``,
    ``Li Wei`` → ``L*****``); a one-character name is all starred; empty stays empty."""
    if s is None:
        return ""
    name = str(s).strip()
    if len(name) <= 1:
        return "*" * len(name)
    return name[0] + "*" * (len(name) - 1)


def mask_id_number(s: str) -> str:
    """``511802199001011234`` → ``511***********1234``."""
    return s[:3] + "*" * (len(s) - 7) + s[-4:]


def mask_reporter(reporter: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A copy of ``reporter`` with its name and phone masked; every other key kept."""
    if reporter is None:
        return None
    out = dict(reporter)
    for key in out:
        if key in NAME_KEYS and out[key]:
            out[key] = mask_name(out[key])
        elif key in PHONE_KEYS and out[key]:
            out[key] = mask_phone(out[key])
    return out


def _mask_match(m: re.Match[str]) -> str:
    if m.group("id"):
        return mask_id_number(m.group("id"))
    text = m.group(0)
    if m.group("landline"):
        area, _, number = text.partition("-")
        return f"{area}-{'*' * (len(number) - 4)}{number[-4:]}"
    return mask_phone(text)


def mask_text(s: Any) -> str:
    """``s`` with the phone numbers and ID numbers in it masked (names in free text cannot
    be told from other words and are not)."""
    if s is None:
        return ""
    text = s if isinstance(s, str) else str(s)
    if not any(c.isdigit() for c in text):
        return text
    return _TEXT.sub(_mask_match, text)


def mask_value(obj: Any, _in_reporter: bool = False) -> Any:
    """``obj`` (dicts, lists, dataclasses, strings, …) with personal data masked, as new
    containers: inside anything under a key containing ``reporter``, the keys ``name``,
    ``phone``, ``reporter_name``, ``reporter_phone``, ``mobile``; the phone keys and
    ``reporter_name`` anywhere; and :func:`mask_text` on every string."""
    if isinstance(obj, str):
        return mask_text(obj)
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = {}
        for key, value in obj.items():
            k = key if isinstance(key, str) else str(key)
            lowered = k.lower()
            personal = (lowered in ALWAYS_PHONE_KEYS or lowered in ALWAYS_NAME_KEYS
                        or (_in_reporter and (lowered in NAME_KEYS or lowered in PHONE_KEYS)))
            if personal and isinstance(value, str | int) and not isinstance(value, bool):
                out[key] = (mask_phone(value) if lowered in PHONE_KEYS else mask_name(value))
            else:
                out[key] = mask_value(value, _in_reporter or "reporter" in lowered)
        return out
    if isinstance(obj, list | tuple | set | frozenset):
        return [mask_value(v, _in_reporter) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return mask_value(
            {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, _in_reporter)
    return obj
