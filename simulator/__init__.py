"""OpenAI-compatible simulator: the stand-in for OpenAI in tests, demos and capacity planning.

Run it with ``imgq sim`` / ``python -m simulator``, or in process::

    from simulator import SimConfig, create_app, serve
    runner = await serve(create_app(SimConfig(latency_ms=0)), "127.0.0.1", 8400)
"""

from simulator.app import create_app, serve
from simulator.config import SimConfig

__all__ = ["SimConfig", "create_app", "serve"]
