"""The actors' JSON log lines carry a task's ids as keys."""

from __future__ import annotations

import json
import logging

from deployments.logs import JsonFormatter
from storage.claims import Claim


def test_a_line_about_a_task_is_one_json_object_with_its_ids():
    claim = Claim(
        task_id=7,
        token="t",
        attempts=1,
        detection_model_id=1,
        classification_model_id=3,
        user_id=42,
    )
    record = logging.LogRecord(
        "deployments.task_queue",
        logging.INFO,
        "x.py",
        1,
        "task %d done in %.0f ms",
        (7, 12.3),
        None,
    )
    for key, value in {**claim.log_extra(), "outcome": "done"}.items():
        setattr(record, key, value)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "task 7 done in 12 ms"
    assert (line["task"], line["user"], line["outcome"]) == (7, 42, "done")
    assert line["levelname"] == "INFO" and line["name"] == "deployments.task_queue"
