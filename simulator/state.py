"""The state one running simulator keeps on its aiohttp app, and the Bearer-key check."""

from __future__ import annotations

import itertools
import os
import random
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from simulator import errors
from simulator.config import SimConfig
from simulator.ratelimit import RateLimits
from simulator.stats import Stats


@dataclass
class SimState:
    """Everything one running simulator holds; lives on the app under :data:`STATE`."""

    config: SimConfig
    limits: RateLimits
    stats: Stats
    rng: random.Random
    session: aiohttp.ClientSession | None = None
    ids: itertools.count[int] = field(default_factory=itertools.count)
    prefix: str = field(default_factory=lambda: os.urandom(4).hex())

    def next_id(self) -> str:
        return f"{self.prefix}{next(self.ids):012x}"


STATE = web.AppKey("simulator_state", SimState)


def check_auth(request: web.Request, config: SimConfig) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise errors.missing_api_key()
    if config.api_key is not None and key != config.api_key:
        raise errors.invalid_api_key(key)
