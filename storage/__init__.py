"""The storage layer: engine and sessions, the ORM classes, the queue's claims and the model
catalog. The API (``serve_app``) and the task queue (``deployments.task_queue``) both import it;
it imports neither, nor anything of HTTP or Ray."""
