-- Rotate a tenant's webhook secret: the new one signs from now on; the replaced one keeps signing
-- too until now + grace (on Redis TIME, so every worker agrees when it ends).
-- KEYS[1] current secret, KEYS[2] previous secrets (zset: secret -> valid until, ms)
-- ARGV[1] the new secret, ARGV[2] grace ms (0: the replaced one stops at once),
-- ARGV[3] most previous secrets kept (the ones ending soonest go first)
-- -> valid-until ms of the replaced secret (0: none kept)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local grace = tonumber(ARGV[2])
local cur = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local until_ = 0
if cur and grace > 0 then
  until_ = now + grace
  redis.call('ZADD', KEYS[2], until_, cur)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[3]) - 1)
end
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if #last > 0 then redis.call('PEXPIREAT', KEYS[2], last[2]) end
return until_
