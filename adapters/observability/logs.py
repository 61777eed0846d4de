"""Log lines: JSON objects (SANDBOX_LOG_FORMAT=json) or readable text, each naming the sandbox and the
correlation id of the work in progress (core/observe.py's log context), never a secret.

A backend with its own logging setup keeps it and adds the two pieces it wants::

    handler.addFilter(ContextFilter(settings.secrets()))   # the ids as record attributes, secrets scrubbed
    handler.setFormatter(JsonFormatter())                   # or its own, using %(sandbox_id)s
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from sandbox_lifecycle.adapters.composition.scrubbing import scrub
from sandbox_lifecycle.core.observe import log_context, log_fields

FIELDS = ("sandbox_id", "correlation_id")
_changes = logging.getLogger("sandbox_lifecycle.cli")


class ContextFilter(logging.Filter):
    """Adds ``sandbox_id`` and ``correlation_id`` to every record (None outside of a sandbox's work) and
    scrubs secrets from the message and the traceback, whatever logger the line came from."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = tuple(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(dict.fromkeys((*self.secrets, *secrets)))

    def filter(self, record: logging.LogRecord) -> bool:
        fields = log_fields()
        for name in FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, fields.get(name))
        # Rendered once here so no formatter, ours or a backend's, ever sees the raw arguments.
        record.msg = scrub(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, self.secrets)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the ids, the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value:
                out[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [sandbox=ID cid=ID]: message`` — the bracket only when there is an id."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(ids)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = [
            f"{label}={value}"
            for label, value in (
                ("sandbox", getattr(record, "sandbox_id", None)),
                ("cid", getattr(record, "correlation_id", None)),
            )
            if value
        ]
        record.ids = f" [{' '.join(ids)}]" if ids else ""
        return super().format(record)


def configure_logging(
    level: int, log_format: str = "text", secrets: Iterable[str] = (), stream: TextIO | None = None
) -> ContextFilter:
    """Send every log line to ``stream`` (stderr) in ``log_format``; returns the filter holding the
    secrets, so more can be added once the settings are parsed. Replaces handlers set up before."""
    handler = logging.StreamHandler(stream or sys.stderr)
    context = ContextFilter(secrets)
    handler.addFilter(context)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return context


def log_change(verb: str, row: Any) -> None:
    """The info line (``sandboxctl -v``) of a command that changed a sandbox: what it is now. The id is set
    as the line's ``sandbox_id`` here, not only by the caller: a create learns it from the row."""
    with log_context(sandbox_id=row.id):
        _changes.info("%s: sandbox %s (%s) is %s, version %d", verb, row.id, row.kind, row.state, row.version)
