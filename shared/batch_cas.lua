-- Compare-and-set a batch's state: change fields only if the state is still the expected one,
-- so two batchers (a paused old leader and the new one) never both take the same step.
-- KEYS: batch hash; ARGV: expected state, then field/value pairs
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[1] then
  return 0
end
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
