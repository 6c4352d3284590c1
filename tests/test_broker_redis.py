"""The broker Redis must never evict (queued tasks would vanish), the cache Redis may."""
from __future__ import annotations

import subprocess

import pytest
import redis

from tests.services import RedisServer


@pytest.fixture
def small_redis(tmp_path):
    servers = []

    def start(policy: str) -> RedisServer:
        server = RedisServer(tmp_path, policy, policy, appendonly=policy == "noeviction", maxmemory="4mb").start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _fill(client: redis.Redis) -> bool:
    """Write 1 KiB values until Redis refuses; True if it refused."""
    try:
        for i in range(20_000):
            client.set(f"filler:{i}", b"x" * 1024)
    except redis.exceptions.OutOfMemoryError as error:
        assert "maxmemory" in str(error)
        return True
    return False


def test_full_broker_refuses_writes_and_keeps_every_queued_message(small_redis):
    broker = small_redis("noeviction")
    client = redis.Redis.from_url(broker.url())
    client.rpush("extract", *[f"task-{i}" for i in range(500)])
    assert _fill(client), "a full noeviction Redis must refuse writes"
    assert client.llen("extract") == 500
    assert client.lrange("extract", 0, 0) == [b"task-0"]
    assert broker.cli("CONFIG", "GET", "appendonly").split()[-1] == "yes"


def test_full_cache_evicts_instead(small_redis):
    cache = small_redis("allkeys-lru")
    client = redis.Redis.from_url(cache.url())
    client.rpush("results", *[f"r-{i}" for i in range(500)])
    assert not _fill(client), "an allkeys-lru Redis evicts rather than refuse"
    assert client.dbsize() < 20_000 + 1


def test_redis_refuses_clients_without_the_password_and_dangerous_commands(small_redis):
    broker = small_redis("noeviction")
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=broker.port).ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        redis.Redis.from_url(broker.url()).flushall()
    assert subprocess.run(["redis-cli", "-p", str(broker.port), "ping"], capture_output=True, text=True).stdout \
        .startswith("NOAUTH")
