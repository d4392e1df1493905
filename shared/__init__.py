"""imgq's shared core: what producers and workers both use.

Settings, job/result models, the error tree, image and text token maths, storage, the limiter and
metric definitions. Nothing here imports Celery, and nothing does work at import time.
"""
