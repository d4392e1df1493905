"""The same pipeline with RabbitMQ as the broker (IMGQ_BROKER_URL); results still in Redis."""

from __future__ import annotations

import socket

import pytest
from kombu import Connection

from producer.client import Client, SubmitRequest
from shared.settings import Settings
from tests.conftest import Sim
from tests.pipeline.conftest import WorkerFactory, make_image, sent_hash

pytestmark = pytest.mark.slow
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def _rabbitmq_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _rabbitmq_up(), reason="no RabbitMQ on 127.0.0.1:5672")
def test_pipeline_on_rabbitmq(
    redis_url: str, simulator: Sim, worker_factory: WorkerFactory
) -> None:
    with Connection(AMQP_URL) as conn:  # start from empty queues: the broker is the machine's
        for q in ("interactive", "bulk"):
            ch = conn.channel()
            ch.queue_declare(q, durable=True, auto_delete=False)
            ch.queue_purge(q)
            ch.close()
    worker_factory(simulator, IMGQ_BROKER_URL=AMQP_URL, wait_for_bindings=False)
    images = [make_image(500 + i) for i in range(6)]
    with Client(Settings(redis_url=redis_url, broker_url=AMQP_URL)) as c:
        ids = c.submit_many(
            SubmitRequest(images=[img], prompt="Describe.", priority=("interactive", "bulk")[i % 2])
            for i, img in enumerate(images)
        )
        results = list(c.as_completed(ids, timeout=60))
    assert all(r.status == "succeeded" for r in results), [r.error for r in results]
    assert {(r.output_text or "").split()[1] for r in results} == {
        f"sha256={sent_hash(i)}" for i in images
    }
