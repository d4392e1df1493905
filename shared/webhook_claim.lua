-- Claim due webhook deliveries: each is pushed one lease ahead, so one worker sends it at a
-- time and a worker that dies mid-delivery only delays it.
-- KEYS[1] due set; ARGV[1] now (unix s), ARGV[2] lease s, ARGV[3] most to claim
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local until_ = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], until_, id) end
return ids
