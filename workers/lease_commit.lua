-- Write a job's status (and, for the Redis result store, its result) only if the fencing rules
-- allow it, in one atomic step.
-- KEYS[1] lock, KEYS[2] job state hash, KEYS[3] open-jobs index, KEYS[4] result key
-- ARGV[1] holder, ARGV[2] new status, ARGV[3] result JSON ('' = state only), ARGV[4] result TTL s,
-- ARGV[5] job id, ARGV[6] state TTL s, ARGV[7] '1' = dry run (say what would happen, write nothing)
-- ARGV[8] events channel ('' = publish nothing), ARGV[9] event message (published whatever the
-- verdict: waiters re-read the stored record), ARGV[10] '1' = also give the lease back (a final
-- write: the write, the event and the release are one round trip).
-- Rules: a stored success is never replaced (the first success is kept). The lease holder may
-- write anything else, except replace a failure with another non-success. A worker that lost
-- its lease may still store a success while the job has none: that answer was paid for, and a
-- newer owner checks the status before its own call (lease_fence.lua) and stops.
-- Returns 1 = written as the lease holder, 2 = a success written without the lease, 0 = refused.
local function verdict()
  local st = redis.call('HGET', KEYS[2], 'status')
  local new = ARGV[2]
  if st == 'succeeded' then return 0 end
  local mine = redis.call('GET', KEYS[1]) == ARGV[1]
  if not mine and new ~= 'succeeded' then return 0 end
  if st == 'failed' and new ~= 'succeeded' then return 0 end
  local code = 2
  if mine then code = 1 end
  if ARGV[7] == '1' then return code end
  redis.call('HSET', KEYS[2], 'status', new)
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
  if new == 'succeeded' or new == 'failed' then redis.call('ZREM', KEYS[3], ARGV[5]) end
  if ARGV[3] ~= '' then redis.call('SET', KEYS[4], ARGV[3], 'EX', tonumber(ARGV[4])) end
  return code
end
local code = verdict()
if ARGV[7] ~= '1' then
  if ARGV[10] == '1' and redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
  if ARGV[8] ~= nil and ARGV[8] ~= '' then redis.call('PUBLISH', ARGV[8], ARGV[9]) end
end
return code
