-- Move pending jobs into a new batch record in one step (crash-safe: all or nothing).
-- KEYS: pending hash, batch hash, batch jobs hash, active set, batches index (zset),
--       group stats hash
-- ARGV: batch id, created_at, ttl seconds, member key prefix, record JSON (flat object),
--       the oldest remaining job's queued-at ('' if none), job state key prefix,
--       line key prefix, then the job ids
-- A job already finished (cancelled by its owner while it waited) is dropped, not sent.
local n, tokens, bytes, gone, gone_tokens, gone_bytes = 0, 0, 0, 0, 0, 0
for i = 9, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    redis.call('HDEL', KEYS[1], ARGV[i])
    local e = cjson.decode(v)
    local st = redis.call('HGET', ARGV[7] .. ARGV[i], 'status')
    if st == 'failed' or st == 'succeeded' then
      redis.call('DEL', ARGV[8] .. ARGV[i])
      gone = gone + 1
      gone_tokens = gone_tokens + (e['tokens'] or 0)
      gone_bytes = gone_bytes + (e['bytes'] or 0)
    else
      redis.call('HSET', KEYS[3], ARGV[i], v)
      redis.call('SET', ARGV[4] .. ARGV[i], ARGV[1], 'EX', ARGV[3])
      n = n + 1
      tokens = tokens + (e['tokens'] or 0)
      bytes = bytes + (e['bytes'] or 0)
    end
  end
end
redis.call('HINCRBY', KEYS[6], 'count', -(n + gone))
redis.call('HINCRBY', KEYS[6], 'bytes', -(bytes + gone_bytes))
redis.call('HINCRBY', KEYS[6], 'tokens', -(tokens + gone_tokens))
if n == 0 then
  return 0
end
if ARGV[6] == '' then
  redis.call('HDEL', KEYS[6], 'first_at')
else
  redis.call('HSET', KEYS[6], 'first_at', ARGV[6])
end
local rec = cjson.decode(ARGV[5])
for k, v in pairs(rec) do
  redis.call('HSET', KEYS[2], k, tostring(v))
end
redis.call('HSET', KEYS[2], 'jobs', n, 'tokens', tokens, 'bytes', bytes)
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[1])
-- The index of batches stays bounded: entries older than a batch record's TTL point at nothing.
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
return n
