-- Put a batch's jobs back in their group's pending set (the batch was larger than the learned
-- enqueued-token limit: they are sealed again in smaller batches). Only from state ARGV[1].
-- KEYS: batch hash, batch jobs hash, pending hash, groups set, active set, group stats hash
-- ARGV: expected state, batch id, group, member key prefix, ttl seconds, now
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[1] then
  return -1
end
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local e = cjson.decode(all[i + 1])
  redis.call('HSET', KEYS[3], all[i], all[i + 1])
  redis.call('SET', ARGV[4] .. all[i], 'pending', 'EX', ARGV[5])
  redis.call('HINCRBY', KEYS[6], 'count', 1)
  redis.call('HINCRBY', KEYS[6], 'bytes', e['bytes'] or 0)
  redis.call('HINCRBY', KEYS[6], 'tokens', e['tokens'] or 0)
end
-- They were queued long ago: due at once.
redis.call('HSET', KEYS[6], 'first_at', 0)
redis.call('DEL', KEYS[2])
redis.call('SADD', KEYS[4], ARGV[3])
redis.call('SREM', KEYS[5], ARGV[2])
redis.call('HSET', KEYS[1], 'state', 'done', 'split', '1', 'jobs', 0, 'updated_at', ARGV[6])
return #all / 2
