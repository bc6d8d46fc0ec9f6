"""Structured logs for every PartLedger process: one JSON object per line, and the request id that ties lines together.

A line holds `time` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `message`, `pid`, the `request_id` of the
HTTP request it was written for, every `extra={...}` field the call gave, and `exception` (the traceback as one
string) when there is one. The request id comes from the record itself (`extra={"request_id": ...}`: the submitter,
which works for many requests at once, names each command's) or else from REQUEST_ID, a context variable the
service's middleware sets for the request being answered (it follows the request into `run_in_threadpool`).

`partledger serve` and `partledger index` log this way (`--log-format text` for the old one-line text); the
service stores each command's request id with the command, so that the submitter's lines about its transaction
(hash, block) carry the id of the HTTP request that asked for it.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("partledger_request_id", default=None)
LOG_FORMATS = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A LogRecord's own attributes: everything else on a record came from `extra` and goes into the line (but uvicorn's
# colour-coded copy of its message).
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName", "color_message"}


def current_request_id() -> str | None:
    """The id of the HTTP request this code runs for (None outside one)."""
    return REQUEST_ID.get()


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.gmtime(record.created)
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def logging_config(log_format: str = "json", level: str = "info") -> dict[str, Any]:
    """A logging.config.dictConfig for a process: everything (uvicorn's loggers included) through one handler on
    stderr, as JSON lines or as text. uvicorn takes it as `log_config` and applies it in each of its workers."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: one of {', '.join(LOG_FORMATS)}")
    formatter: dict[str, Any] = {"()": f"{__name__}.JsonFormatter"} if log_format == "json" else {"format": TEXT_FORMAT}
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["default"], "level": level},
        # uvicorn's own loggers carry handlers of their own by default: here they pass their lines to the root's;
        # Alembic's plugin and dialect lines at every start say nothing an operator needs
        "loggers": {
            **{name: {"handlers": [], "propagate": True, "level": level} for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
            "alembic": {"level": "WARNING"},
        },
    }


def configure_logging(log_format: str = "json", level: str = "info") -> None:
    """Sets this process's logging up as logging_config says (for commands that run no uvicorn: the indexer)."""
    import logging.config

    logging.config.dictConfig(logging_config(log_format, level))
