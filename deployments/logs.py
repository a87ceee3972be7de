"""JSON log lines for the platform's own actors (the task queue, the webhook sender), like
those Serve writes for its replicas with ``logging_config.encoding: JSON``: one object a line,
with every ``extra`` field (``task``, ``user``) as a key, so a line about a task can be found
by either."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# What every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"asctime": datetime.fromtimestamp(record.created, UTC).isoformat(
                    timespec="milliseconds"),
                "levelname": record.levelname, "name": record.name,
                "message": record.getMessage(), "filename": record.filename,
                "lineno": record.lineno, "process": record.process}
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["exc_text"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def json_logging(*names: str, level: int = logging.INFO) -> None:
    """Send these loggers' records to stderr (the actor's log file) as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
