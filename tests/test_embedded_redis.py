"""The embedded Redis: throwaway for tests, append-only (everysec) when given a data directory."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from shared.embedded_redis import EmbeddedRedis, free_port, with_embedded_redis
from shared.settings import Settings


def test_without_a_data_dir_nothing_is_kept() -> None:
    r = EmbeddedRedis().start()
    try:
        client = redis.Redis.from_url(r.url)
        assert client.config_get("appendonly") == {"appendonly": "no"}
        client.set("k", "v")
        client.close()
        r.stop()
        r.start()  # same port, fresh temporary directory
        client = redis.Redis.from_url(r.url)
        assert client.get("k") is None
        client.close()
    finally:
        r.stop()


def test_with_a_data_dir_jobs_survive_a_crash_and_restart(tmp_path: Path) -> None:
    r = EmbeddedRedis(data_dir=tmp_path / "redis").start()
    try:
        client = redis.Redis.from_url(r.url)
        cfg = client.config_get("append*")
        assert (cfg["appendonly"], cfg["appendfsync"]) == ("yes", "everysec")
        client.set("imgq:job:1", "queued")
        client.close()
        time.sleep(1.5)  # everysec: a write older than ~1 s is on disk
        r.kill()  # no shutdown flush
        r.start()
        client = redis.Redis.from_url(r.url)
        assert client.get("imgq:job:1") == b"queued"
        client.close()
    finally:
        r.stop()
    assert any((tmp_path / "redis").glob("appendonly*")), "the AOF stays in the data dir"


def test_the_cli_redis_is_shared_persistent_and_only_started_once(tmp_path: Path) -> None:
    settings = Settings(redis_url=None, data_dir=tmp_path, embedded_redis_port=free_port())
    resolved = with_embedded_redis(settings)
    url = resolved.require_redis_url()
    client = redis.Redis.from_url(url)
    try:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("dir")["dir"] == str(tmp_path / "redis")
        client.set("k", "v")
        again = with_embedded_redis(settings)  # a second command meets the same server
        assert again.redis_url == url
        assert settings.redis_url is None  # the caller's settings are left alone
        configured = Settings(redis_url="redis://127.0.0.1:1/0", data_dir=tmp_path)
        assert with_embedded_redis(configured) is configured  # a configured Redis is used as is
    finally:
        client.shutdown(nosave=True)  # the daemon outlives commands by design; end ours


def test_a_cli_command_without_imgq_redis_url_starts_the_embedded_redis(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGQ_")}
    env.update(IMGQ_DATA_DIR=str(tmp_path), IMGQ_EMBEDDED_REDIS_PORT=str(port))
    proc = subprocess.run(
        [sys.executable, "-m", "imgq", "status", "no-such-job"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    client = redis.Redis(port=port)
    try:
        assert proc.returncode == 1 and "no job no-such-job" in proc.stderr, proc.stderr
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert (tmp_path / "redis" / "appendonly.aof").exists()
    finally:
        client.shutdown(nosave=True)
