-- Add a job to its tenant's list with the next sequence number (the list's order and cursor).
-- KEYS[1] the tenant's sorted set, KEYS[2] its sequence counter; ARGV[1] external job id,
-- ARGV[2] TTL s of the list (refreshed: it lives as long as its newest job's result),
-- ARGV[3] most entries kept (the oldest go first: the list stays bounded)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local n = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], n, ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[3]) + 1))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
return n
