"""Cron expressions as Kubeflow Pipelines schedules them: six fields, seconds first.

KFP's scheduler (robfig/cron with seconds) reads ``sec min hour day-of-month month day-of-week``.
The usual five-field form is accepted and gets ``0`` seconds, so ``0 2 * * *`` (02:00 daily)
becomes ``0 0 2 * * *``. Every field is checked here, so a bad schedule is a spec error before
any request reaches the server, instead of a recurring run that never fires.
"""

from __future__ import annotations

import re

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
# name, lowest, highest, symbolic names (index + lowest = value), '?' allowed
_FIELDS = [("seconds", 0, 59, [], False), ("minutes", 0, 59, [], False), ("hours", 0, 23, [], False),
           ("day of month", 1, 31, [], True), ("month", 1, 12, _MONTHS, False),
           ("day of week", 0, 6, _DAYS, True)]
_DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_EVERY = re.compile(r"^@every (\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def to_kfp_cron(expression: str) -> str:
    """The six-field form of ``expression``; ``ValueError`` says which field is wrong and why."""
    expr = " ".join(expression.split())
    if expr.startswith("@"):
        if expr in _DESCRIPTORS or _EVERY.match(expr):
            return expr
        raise ValueError(f"unknown descriptor; expected one of {', '.join(sorted(_DESCRIPTORS))} "
                         "or '@every <duration>'")
    parts = expr.split(" ") if expr else []
    if len(parts) == 5:
        parts = ["0", *parts]
    elif len(parts) != 6:
        raise ValueError(f"{len(parts)} fields; expected 5 (minute hour day-of-month month day-of-week) "
                         "or 6 (seconds first, as KFP)")
    for part, field in zip(parts, _FIELDS, strict=True):
        _check_field(part, *field)
    return " ".join(parts)


def _value(token: str, name: str, low: int, high: int, names: list[str]) -> int:
    if token.upper() in names:
        return names.index(token.upper()) + low
    if not token.isdigit():
        raise ValueError(f"{name}: '{token}' is not a number" + (f" or one of {'/'.join(names)}" if names else ""))
    value = int(token)
    if not low <= value <= high:
        raise ValueError(f"{name}: {value} is outside {low}-{high}")
    return value


def _check_field(field: str, name: str, low: int, high: int, names: list[str], question: bool) -> None:
    for item in field.split(","):
        base, slash, step = item.partition("/")
        if slash and (not step.isdigit() or int(step) == 0):
            raise ValueError(f"{name}: step '{step}' in '{item}' must be a positive integer")
        if base in ("*", "?"):
            if base == "?" and not question:
                raise ValueError(f"{name}: '?' is only allowed in day of month and day of week")
            continue
        start, dash, end = base.partition("-")
        first = _value(start, name, low, high, names)
        if dash and _value(end, name, low, high, names) < first:
            raise ValueError(f"{name}: range '{base}' runs backwards")
