-- Settle a job's reservation with its bill (micro-USD) once: counters move by billed - reserved.
-- KEYS[1] reservation hash; ARGV[1] billed, ARGV[2] prefix of the per-tenant billed counters
-- Returns 1 when settled, 0 when there was nothing to settle (no reservation, or done before).
local r = redis.call('HMGET', KEYS[1], 'amount', 'day', 'month', 'tenant')
if not r[1] then return 0 end
local billed = tonumber(ARGV[1])
local delta = billed - tonumber(r[1])
if redis.call('EXISTS', r[2]) == 1 then redis.call('INCRBY', r[2], delta) end
if redis.call('EXISTS', r[3]) == 1 then redis.call('INCRBY', r[3], delta) end
if billed > 0 then redis.call('INCRBY', ARGV[2] .. r[4], billed) end
redis.call('DEL', KEYS[1])
return 1
