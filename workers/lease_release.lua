-- Give a lease back (only while it is still ours). With ARGV[2] = '1' the delivery is not
-- counted (the job goes back to the queue waiting for capacity: not the job's fault).
-- KEYS[1] lock, KEYS[2] job state hash; ARGV[1] holder, ARGV[2] uncount flag
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] == '1' then
  redis.call('HINCRBY', KEYS[2], 'deliveries', -1)
  if redis.call('HGET', KEYS[2], 'status') == 'running' then
    redis.call('HSET', KEYS[2], 'status', 'queued')
  end
end
return 1
