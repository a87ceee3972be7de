"""JSON log lines for the platform's own actors (the task queue, the webhook sender), like
those Serve writes for its replicas with ``logging_config.encoding: JSON``: one object a line,
with every ``extra`` field (``task``, ``user``) as a key, so a line about a task can be found
by either."""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path

# What every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "asctime": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "levelname": record.levelname,
            "name": record.name,
            "message": record.getMessage(),
            "filename": record.filename,
            "lineno": record.lineno,
            "process": record.process,
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["exc_text"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def json_logging(*names: str, file_name: str, level: int = logging.INFO) -> Path | None:
    """Write these loggers' records as JSON lines to ``primitives/<file_name>`` in the Ray
    session's log folder, beside Serve's (not to stderr, which Ray forwards to the driver:
    a line per task would flood ``serve run``'s terminal); stderr when there is no session.
    The file's path, if any."""
    folder = _ray_logs_dir()
    path = folder / "primitives" / file_name if folder is not None else None
    handler: logging.Handler
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.WatchedFileHandler(path)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
    return path


def _ray_logs_dir() -> Path | None:
    try:
        from ray._private.worker import _global_node  # no public API names this folder

        return Path(_global_node.get_logs_dir_path()) if _global_node is not None else None
    except Exception:  # noqa: BLE001 - outside a Ray worker, or Ray changed: use stderr
        return None
