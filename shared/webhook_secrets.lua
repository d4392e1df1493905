-- A tenant's webhook signing secrets: the current one (made on first use), then the previous ones
-- still inside their grace period (rotation), the longest-valid first.
-- KEYS[1] current secret, KEYS[2] previous secrets (zset: secret -> valid until, ms, Redis TIME)
-- ARGV[1] a fresh secret, stored only when the tenant has none yet
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {redis.call('GET', KEYS[1])}
for _, s in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[2], '+inf', '(' .. now)) do
  out[#out + 1] = s
end
return out
