"""What a pydantic validation error says, in one format for every part.

Each problem is one line: the key (dotted path), the value given (a secret masked,
a nested table shown as `{...}`, cut at 80 characters) and what was expected, e.g.
`mqtt.port = 70000: Input should be less than or equal to 65535`. Used by the
gateway config (edge_agent/config.py), the hub settings (cloud_hub/settings.py) and
the message models (contracts/messages.py, which leave the values out: a refused
payload's values are not repeated into logs).
"""

from __future__ import annotations

from pydantic import ValidationError

MASK = "***"
VALUE_CHARS = 80


def is_secret(key: str) -> bool:
    """A key whose value is never echoed into a terminal or a log."""
    return "secret" in key


def shown_value(key: str, value: object) -> str:
    """The value as an error line shows it: repr, `{...}` for a table, secrets masked."""
    if is_secret(key):
        return MASK
    return (repr(value) if not isinstance(value, dict) else "{...}")[:VALUE_CHARS]


def validation_problems(
    e: ValidationError, *, values: bool = True, limit: int | None = None
) -> list[str]:
    """One line per problem: `key = value: expected` (`key: expected` without values)."""
    lines = []
    for err in e.errors()[:limit]:
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        if values:
            lines.append(f"{key} = {shown_value(key, err.get('input'))}: {err['msg']}")
        else:
            lines.append(f"{key}: {err['msg']}")
    return lines


def describe(e: ValidationError, indent: str = "  ") -> str:
    """Every problem of `e` on its own line, indented (for a config or settings error)."""
    return "\n".join(indent + line for line in validation_problems(e))
