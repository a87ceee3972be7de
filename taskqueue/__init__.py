"""The task queue's logic, importable without Ray: the dispatcher (claims, runs, retries,
results under the claim, waits for a task to end) and the hourly housekeeping. The Ray actor
that runs them is a thin shell in deployments/task_queue.py."""

from taskqueue.dispatcher import Dispatcher, QueueObserver, QueueStats, Store, requeue_delay
from taskqueue.retention import retention_loop

__all__ = ["Dispatcher", "QueueObserver", "QueueStats", "Store", "requeue_delay", "retention_loop"]
