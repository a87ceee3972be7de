"""The API with nothing behind it to run tasks (the API tests and the benchmark's API):
stored tasks stay queued until a test runs them itself."""

from __future__ import annotations

from typing import Any

from storage.results import ResultBody


class NoQueue:
    """A ``serve_app.services.QueueLink`` that never runs a task."""

    def notify(self) -> None:
        return None

    def cancel(self, task_id: int, *, deleted: bool = False) -> None:
        return None

    async def ready(self) -> bool:
        return False  # nothing runs the stored tasks

    async def wait_finished(
        self, task_id: int, timeout: float, *, notify: bool = False
    ) -> ResultBody | None:
        return None

    async def describe_models(self) -> dict[int, dict[str, Any]]:
        return {}
