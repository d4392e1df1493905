"""imgq's shared core: what producers and workers both use.

Settings, job/result models, the error tree, the broker wiring (task name, queues, the Celery app
factory, lease constants), image and text token maths, storage, the limiter and metric
definitions. Nothing here imports a worker or producer module (``lint-imports`` checks it),
Celery is imported only when ``shared.broker`` builds an app, and nothing does work at import time.
"""
