-- Take a job's lease with a fresh fencing token, or say why not. Time is Redis TIME.
-- KEYS[1] lock, KEYS[2] job state hash, KEYS[3] open-jobs index
-- ARGV[1] owner, ARGV[2] lease ms, ARGV[3] state TTL s, ARGV[4] job id
-- Returns {kind, token, deliveries, now_ms, expires_at}: kind 1 = taken, 0 = held by another
-- live owner, 2 = the job is already finished.
local t = redis.call('TIME')
local now_ms = t[1] * 1000 + math.floor(t[2] / 1000)
local st = redis.call('HMGET', KEYS[2], 'status', 'expires_at')
local expires_at = st[2] or ''
if st[1] == 'succeeded' or st[1] == 'failed' then return {2, 0, 0, now_ms, expires_at} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, 0, 0, now_ms, expires_at} end
local token = redis.call('HINCRBY', KEYS[2], 'token', 1)
local n = redis.call('HINCRBY', KEYS[2], 'deliveries', 1)
redis.call('HSET', KEYS[2], 'status', 'running')
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
redis.call('ZADD', KEYS[3], now_ms, ARGV[4])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', tonumber(ARGV[2]))
return {1, token, n, now_ms, expires_at}
