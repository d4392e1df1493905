-- Decide what to do with one open job that showed no sign of life for a while.
-- KEYS[1] lock, KEYS[2] job state hash, KEYS[3] open-jobs index
-- ARGV[1] job id, ARGV[2] stale bound ms
-- Returns 'alive' (a lease is held or it moved recently), 'done' / 'gone' (dropped from the
-- index), 'expired' (past its deadline), or 'requeue' (re-scored now: at most one re-enqueue
-- per stale period).
local t = redis.call('TIME')
local now_ms = t[1] * 1000 + math.floor(t[2] / 1000)
local seen = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not seen then return 'gone' end
if tonumber(seen) > now_ms - tonumber(ARGV[2]) then return 'alive' end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('ZADD', KEYS[3], now_ms, ARGV[1])  -- leased: look again a stale period later
  return 'alive'
end
local st = redis.call('HMGET', KEYS[2], 'status', 'expires_at', 'spec')
if st[1] == 'succeeded' or st[1] == 'failed' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 'done'
end
if not st[3] then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 'gone'
end
if st[2] and st[2] ~= '' and tonumber(st[2]) * 1000 < now_ms then return 'expired' end
redis.call('ZADD', KEYS[3], now_ms, ARGV[1])
redis.call('HINCRBY', KEYS[2], 'reenqueued', 1)
return 'requeue'
