"""imgq workers: the Celery app, thin tasks, the event-loop thread and the OpenAI call path."""
