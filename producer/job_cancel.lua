-- Cancel a job that no worker holds and that has not finished: mark its state failed, so every
-- later delivery takes no lease ("done") and makes no call.
-- KEYS[1] job state hash, KEYS[2] its lease lock, KEYS[3] open-jobs index; ARGV[1] job id
-- Returns 'cancelled', or why not: 'unknown', 'running', 'succeeded', 'failed'.
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'unknown' end
if st ~= 'queued' then return st end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'running' end
redis.call('HSET', KEYS[1], 'status', 'failed')
redis.call('ZREM', KEYS[3], ARGV[1])
return 'cancelled'
