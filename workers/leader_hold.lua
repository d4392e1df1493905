-- Hold (or take) a fleet-wide role: KEYS[1] role key; ARGV[1] owner, ARGV[2] TTL ms.
-- Returns 1 while this owner holds it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then return 1 end
return 0
