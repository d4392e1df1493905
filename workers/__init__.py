"""imgq workers: thin Celery tasks, the event-loop thread and the OpenAI call path."""
