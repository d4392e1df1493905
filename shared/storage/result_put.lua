-- Write a result unless the stored one is terminal (ARGV[3] = '1' forces the write).
-- KEYS[1] result key; ARGV[1] result JSON, ARGV[2] TTL s, ARGV[3] force flag
local cur = redis.call('GET', KEYS[1])
if cur and ARGV[3] ~= '1' then
  local ok, doc = pcall(cjson.decode, cur)
  if ok and (doc['status'] == 'succeeded' or doc['status'] == 'failed') then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return 1
