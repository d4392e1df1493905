-- Record a submitted job's state: its spec (for re-enqueue), deadline and status, and put it in
-- the open-jobs index scored by Redis TIME (ms), the reconciler's "last sign of life".
-- KEYS[1] state hash, KEYS[2] open-jobs index
-- ARGV[1] job id, ARGV[2] spec JSON, ARGV[3] expires_at (unix s), ARGV[4] state TTL (s)
local t = redis.call('TIME')
local now_ms = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('HSET', KEYS[1], 'spec', ARGV[2], 'expires_at', ARGV[3], 'status', 'queued')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('ZADD', KEYS[2], now_ms, ARGV[1])
return now_ms
