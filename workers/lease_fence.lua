-- Prove a lease is still current and extend it (the fencing check before a paid call, and the
-- heartbeat). KEYS[1] lock, KEYS[2] job state hash, KEYS[3] open-jobs index
-- ARGV[1] holder ("owner:token"), ARGV[2] lease ms, ARGV[3] job id
-- Returns 1 = current (extended), 0 = lost (lapsed or a newer token), -1 = the job is finished.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local st = redis.call('HGET', KEYS[2], 'status')
if st == 'succeeded' or st == 'failed' then return -1 end
local t = redis.call('TIME')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('ZADD', KEYS[3], 'XX', t[1] * 1000 + math.floor(t[2] / 1000), ARGV[3])
return 1
