-- Reserve a job's estimated cost against its key's budget (micro-USD), atomically with the check.
-- KEYS[1] reservation hash (per job), KEYS[2] day counter, KEYS[3] month counter,
-- KEYS[4] the job's state hash (shared/jobstate.py): the key and amount are noted there, so a
--         re-enqueue (`imgq dlq retry`) can reserve again; it lives as long as the job's spec
-- ARGV[1] amount, ARGV[2] limit (-1: none), ARGV[3] 'd' or 'm' (the limited period),
-- ARGV[4] tenant, ARGV[5] day TTL s, ARGV[6] month TTL s, ARGV[7] reservation TTL s,
-- ARGV[8] key id, ARGV[9] TTL s of a state hash created here (the submit extends it)
-- Returns {1, counter after} when reserved (or already reserved for this job), {0, counter}.
local which = KEYS[2]
if ARGV[3] == 'm' then which = KEYS[3] end
local current = tonumber(redis.call('GET', which) or '0')
if redis.call('EXISTS', KEYS[1]) == 1 then return {1, current} end
local amount = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if limit >= 0 and current + amount > limit then return {0, current} end
redis.call('INCRBY', KEYS[2], amount)
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
redis.call('INCRBY', KEYS[3], amount)
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[6]))
redis.call('HSET', KEYS[1], 'amount', amount, 'day', KEYS[2], 'month', KEYS[3], 'tenant', ARGV[4])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
local fresh = redis.call('EXISTS', KEYS[4]) == 0
redis.call('HSET', KEYS[4], 'budget_key', ARGV[8], 'budget_amount', amount)
if fresh then redis.call('EXPIRE', KEYS[4], tonumber(ARGV[9])) end
return {1, current + amount}
