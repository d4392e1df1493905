-- Add one job to its batch group's pending set, once: a job already pending or in a batch is
-- left alone, so a redelivered message never puts a job in two batches. The group's stats
-- (count, bytes, tokens, first_at) let the batcher decide without reading every entry.
-- KEYS: member key, pending hash, line key, groups set, group stats hash
-- ARGV: job id, entry JSON, request line, group, ttl seconds, line bytes, tokens, queued at
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[5])
redis.call('SET', KEYS[1], 'pending', 'EX', ARGV[5])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[5], 'count', 1)
redis.call('HINCRBY', KEYS[5], 'bytes', ARGV[6])
redis.call('HINCRBY', KEYS[5], 'tokens', ARGV[7])
redis.call('HSETNX', KEYS[5], 'first_at', ARGV[8])
redis.call('SADD', KEYS[4], ARGV[4])
return 1
