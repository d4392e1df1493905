-- imgq limiter v2: one (account, model) limit = three buckets (tokens, requests, images) and one
-- fleet-wide queue of waiters. Every change is this one script (EVALSHA), on Redis TIME.
--
-- Buckets. Each holds `limit` and refills at limit/60 per second, like OpenAI's. Stored as a
-- deficit d >= 0 (limit - level, refilled down to 0), so a limit discovered later keeps what was
-- spent. A grant adds its amounts to the deficits; it fits while d + need <= limit - slack, where
-- slack = limit * SLACK_MS / 60000 covers the API admitting a call a little after our grant while
-- its bucket is full (the only case where a late admission loses refill). Settle corrects the
-- tokens to what the API counted (debt allowed), release uncounted gives all back.
--
-- Queue. Waiters sit in two sorted sets (interactive, bulk) scored by a weighted-fair tag:
-- tag = max(V, flow's last tag) + tokens / weight, V = tag of the last grant of that class, a
-- flow = (process, tenant), weight = the tenant's. Within a flow: arrival order. Backlogged
-- flows take turns (a process that queued 100 waiters at once does not make the others wait for
-- all of them), and tenants share by weight (their jobs spread over the same processes). Equal
-- tags go by waiter id, which starts with its arrival time.
-- Interactive goes first; after BURST interactive grants in a row while bulk waits, one bulk.
-- Whoever runs the script grants from the head for the whole fleet; grants for other processes
-- go to their list (g:<proc>) which they collect on their next call. A waiter of a process not
-- seen for ALIVE_MS, or past its deadline, is dropped when it reaches the head (its process, if
-- alive after all, is told with code -2 and enqueues it again).
--
-- KEYS: S state hash, F in-flight zset (id -> grant ms), E in-flight hash (id -> "tok,img"),
--       QI / QB queues (id -> tag), W waiter hash (id -> record), T flow tags, P procs (-> seen)
-- ARGV: 1 op, 2 now_ms ('' = TIME), 3 ttl_ms, 4 grace_ms, 5-7 configured tpm rpm ipm,
--       8-10 default tpm rpm ipm (0 = none), 11 slack_ms, 12 grant list prefix; op args from 13.
local S, F, E, QI, QB, W, T, P = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local OP = ARGV[1]
local TTL = tonumber(ARGV[3])
local GRACE = tonumber(ARGV[4])
local SLACK_MS = tonumber(ARGV[11])
local GPREFIX = ARGV[12]
local GLIST_TTL = 60000

local function num(field)
  return tonumber(redis.call('HGET', S, field) or '0') or 0
end

local function fmt(x)
  return string.format('%.4f', x)
end

-- HINCRBY rejects "-0" (Lua 5.1 renders it so): skip zero deltas.
local function incr(field, delta)
  if delta ~= 0 then redis.call('HINCRBY', S, field, string.format('%d', delta)) end
end

local function clock()
  local raw
  if ARGV[2] ~= '' then
    raw = tonumber(ARGV[2])
  else
    local t = redis.call('TIME')
    raw = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  -- monotonic: a clock stepping back is absorbed by an offset (capacity neither freed nor frozen)
  local offset, last = num('offset'), num('last')
  local now = raw + offset
  if now < last then
    offset = offset + (last - now)
    now = last
    redis.call('HSET', S, 'offset', offset)
  end
  redis.call('HSET', S, 'last', now)
  return now
end

local function pick(cfg, disc, def)
  if cfg > 0 and disc > 0 then
    if disc < cfg then return disc, 'discovered' end
    return cfg, 'configured'
  end
  if cfg > 0 then return cfg, 'configured' end
  if disc > 0 then return disc, 'discovered' end
  if def > 0 then return def, 'default' end
  return 0, 'none'
end

-- The three buckets, refilled up to now. B.t/B.r/B.i are the limits, B.td/B.rd/B.id the deficits.
-- The limit in force for this caller: its configured value or the discovered one; a caller with
-- neither takes what a configured process of the fleet last used (field f<dim>), then the default.
local function limit_of(dim, cfg, def)
  local v, src = pick(cfg, num('disc_' .. dim), def)
  if src == 'default' then
    local fleet = num('f' .. dim)
    if fleet > 0 then return fleet, 'configured' end
  elseif src == 'configured' and num('f' .. dim) ~= v then
    redis.call('HSET', S, 'f' .. dim, v)
  end
  return v, src
end

local function load(now)
  local B = {now = now}
  B.t, B.ts = limit_of('tpm', tonumber(ARGV[5]), tonumber(ARGV[8]))
  B.r, B.rs = limit_of('rpm', tonumber(ARGV[6]), tonumber(ARGV[9]))
  B.i, B.is = limit_of('ipm', tonumber(ARGV[7]), tonumber(ARGV[10]))
  local at = tonumber(redis.call('HGET', S, 'at') or tostring(now))
  local dt = now - at
  if dt < 0 then dt = 0 end
  -- Probe phase (limits unknown, the server's headers not seen yet): no refill, since the
  -- default may be far above the real limit; the probe's answer brings the real rates.
  if B.ts == 'default' and num('nohdr') == 0 then dt = 0 end
  B.td = math.max(0, num('td') - dt * B.t / 60000)
  B.rd = math.max(0, num('rd') - dt * B.r / 60000)
  B.id = math.max(0, num('id') - dt * B.i / 60000)
  return B
end

local function save(B)
  redis.call('HSET', S, 'at', B.now, 'td', fmt(B.td), 'rd', fmt(B.rd), 'id', fmt(B.id))
end

-- ms until a bucket of `limit` with deficit `d` can take `need` (0: now); limit 0 = unlimited.
-- `keep`: share of the limit this grant must leave (bulk leaves a little for interactive).
local function wait_ms(d, need, limit, keep)
  if limit <= 0 or need <= 0 then return 0 end
  local room = limit - limit * SLACK_MS / 60000 - limit * keep
  local target = room - need
  if need > room then target = 0 end  -- bigger than the slack allows: wait for a full bucket
  if d <= target + 1e-6 then return 0 end
  return math.ceil((d - target) * 60000 / limit)
end

local function touch()
  for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, TTL) end
end

-- in-flight calls whose worker died: forget them after GRACE (their charge stays spent)
local function prune(now)
  local old = redis.call('ZRANGEBYSCORE', F, '-inf', now - GRACE, 'LIMIT', 0, 200)
  for _, id in ipairs(old) do
    local v = redis.call('HGET', E, id)
    if v then
      local t = tonumber(string.match(v, '^(%-?%d+),'))
      incr('res', -t)
      redis.call('HDEL', E, id)
    end
    redis.call('ZREM', F, id)
  end
  if redis.call('ZCARD', F) == 0 then redis.call('HSET', S, 'res', 0) end
end

local function grant(B, id, tokens, images)
  B.td = B.td + tokens
  B.rd = B.rd + 1
  B.id = B.id + images
  redis.call('ZADD', F, B.now, id)
  redis.call('HSET', E, id, tokens .. ',' .. images)
  incr('res', tokens)
end

-- give back (uncounted) or forget (counted) an in-flight call; returns its tokens or nil
local function finish(B, id, refund)
  local v = redis.call('HGET', E, id)
  if not v then return nil end
  local t, im = string.match(v, '^(%-?%d+),(%-?%d+)$')
  t, im = tonumber(t), tonumber(im)
  redis.call('HDEL', E, id)
  redis.call('ZREM', F, id)
  incr('res', -t)
  if refund then
    B.td = math.max(0, B.td - t)
    B.rd = math.max(0, B.rd - 1)
    B.id = math.max(0, B.id - im)
  end
  return t
end

-- x-ratelimit-* of an answer: discover limits; resync the levels down (never up) to `remaining`
local function observe(B, a)
  local lt, lr, rt, rr, li, ri, tol = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3],
    ARGV[a + 4], ARGV[a + 5], tonumber(ARGV[a + 6])
  if lt == '' and lr == '' and rt == '' and rr == '' and li == '' and ri == '' then
    redis.call('HSET', S, 'nohdr', 1)  -- a server without rate-limit headers: defaults apply
    return B
  end
  local changed = false
  for _, pair in ipairs({{lt, 'disc_tpm'}, {lr, 'disc_rpm'}, {li, 'disc_ipm'}}) do
    if pair[1] ~= '' and tonumber(pair[1]) > 0 and tostring(num(pair[2])) ~= pair[1] then
      redis.call('HSET', S, pair[2], pair[1])
      changed = true
    end
  end
  if changed then  -- the limits in force may have changed: re-read them, deficits stay
    local now, td, rd, id = B.now, B.td, B.rd, B.id
    B = load(now)
    B.td, B.rd, B.id = td, rd, id
  end
  local resynced = 0
  for _, dim in ipairs({{rt, 't', 'td'}, {rr, 'r', 'rd'}, {ri, 'i', 'id'}}) do
    local limit = B[dim[2]]
    if dim[1] ~= '' and limit > 0 then
      local remaining = tonumber(dim[1])
      local level = limit - B[dim[3]]
      -- the API has less than we think (someone else uses the key): take its word, never more
      if remaining < level - math.max(1, tol * limit) then
        B[dim[3]] = limit - remaining
        resynced = 1
      end
    end
  end
  if resynced == 1 then incr('resyncs', 1) end
  return B
end

local function alive(proc, now, alive_ms)
  local seen = redis.call('ZSCORE', P, proc)
  return seen and tonumber(seen) >= now - alive_ms
end

local function push(proc, entry)
  local key = GPREFIX .. proc
  redis.call('RPUSH', key, entry)
  redis.call('PEXPIRE', key, GLIST_TTL)
end

-- record: tokens,images,class,proc,expires_ms,tag,tenant (tenant last: it may be anything)
local function parse_waiter(v)
  local tok, img, cls, proc, exp, tag, tenant =
    string.match(v, '^(%d+),(%d+),(%a),([^,]+),(%d+),([^,]+),(.*)$')
  return tonumber(tok), tonumber(img), cls, proc, tonumber(exp), tonumber(tag), tenant
end

local function drop_waiter(q, id)
  redis.call('ZREM', q, id)
  redis.call('HDEL', W, id)
end

-- -------------------------------------------------------------------------------------------
local now = clock()
prune(now)
local B = load(now)

if OP == 'pump' then
  -- ARGV[13..]: proc, alive_ms, burst, max_grants, bulk_keep (share of each bucket bulk grants
  -- leave for interactive), n_new, n_new x (id, tokens, images, class, tenant, weight, ttl_ms),
  -- n_cancel, n_cancel x id
  -- -> {now, tpm, rpm, ipm, hint_ms, ts, [id, code, value]...}; code 1 granted (value: grant
  --    ms), -1 tokens too large (value: tpm), -3 images too large (value: ipm), -2 dropped
  local me, alive_ms, burst, max_grants = ARGV[13], tonumber(ARGV[14]), tonumber(ARGV[15]),
    tonumber(ARGV[16])
  redis.call('ZADD', P, now, me)
  redis.call('ZREMRANGEBYSCORE', P, '-inf', now - 10 * alive_ms)
  local out = {}
  local function mine(id, code, value)
    out[#out + 1] = id
    out[#out + 1] = code
    out[#out + 1] = value
  end
  local bulk_keep = tonumber(ARGV[17])
  local a = 19
  local n_new = tonumber(ARGV[18])
  for _ = 1, n_new do
    local id, tokens, images, cls = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
      ARGV[a + 3]
    local tenant, weight, ttl = ARGV[a + 4], tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])
    a = a + 7
    if B.t > 0 and tokens > B.t then
      mine(id, -1, B.t)
    elseif B.i > 0 and images > B.i then
      mine(id, -3, B.i)
    else
      local q = QI
      if cls == 'b' then q = QB end
      local tk = cls .. '|' .. me .. '|' .. tenant
      local tag = math.max(num('v' .. cls), tonumber(redis.call('HGET', T, tk) or '0'))
        + tokens / weight
      redis.call('HSET', T, tk, tostring(tag))
      local exp = 0
      if ttl > 0 then exp = now + ttl end
      redis.call('HSET', W, id, table.concat({tokens, images, cls, me, exp, tostring(tag), tenant}, ','))
      redis.call('ZADD', q, tag, id)
    end
  end
  local n_cancel = tonumber(ARGV[a])
  for i = 1, n_cancel do
    local id = ARGV[a + i]
    if redis.call('HEXISTS', W, id) == 1 then
      redis.call('ZREM', QI, id)
      redis.call('ZREM', QB, id)
      redis.call('HDEL', W, id)
    else
      finish(B, id, true)  -- granted but nobody will use it: give it back
    end
  end
  -- grant from the head, for the whole fleet, while the buckets allow
  local hint, granted, streak = -1, 0, num('streak')
  while granted < max_grants do
    local ni, nb = redis.call('ZCARD', QI), redis.call('ZCARD', QB)
    local q, cls
    if ni > 0 and (nb == 0 or streak < burst) then
      q, cls = QI, 'i'
    elseif nb > 0 then
      q, cls = QB, 'b'
    else
      break
    end
    local id = redis.call('ZRANGE', q, 0, 0)[1]
    local v = redis.call('HGET', W, id)
    local tokens, images, _, proc, exp, tag, tenant
    if v then tokens, images, _, proc, exp, tag, tenant = parse_waiter(v) end
    if not tokens then
      drop_waiter(q, id)
    elseif (exp > 0 and exp < now) or (proc ~= me and not alive(proc, now, alive_ms)) then
      drop_waiter(q, id)
      push(proc, id .. '|-2|0')
    elseif B.t > 0 and tokens > B.t then
      drop_waiter(q, id)
      if proc == me then mine(id, -1, B.t) else push(proc, id .. '|-1|' .. B.t) end
    elseif B.i > 0 and images > B.i then
      drop_waiter(q, id)
      if proc == me then mine(id, -3, B.i) else push(proc, id .. '|-3|' .. B.i) end
    else
      local cd = num('cooldown')
      if cd > now then hint = cd - now break end
      -- limit unknown (not configured, not discovered): one probe call at a time until an
      -- answer brings the headers, or shows the server sends none
      if B.ts == 'default' and num('nohdr') == 0 and redis.call('ZCARD', F) > 0 then
        hint = 100
        break
      end
      local keep = 0
      if cls == 'b' then keep = bulk_keep end
      local w = math.max(wait_ms(B.td, tokens, B.t, keep), wait_ms(B.rd, 1, B.r, keep),
        wait_ms(B.id, images, B.i, keep))
      if w > 0 then hint = w break end
      grant(B, id, tokens, images)
      drop_waiter(q, id)
      granted = granted + 1
      redis.call('HSET', S, 'v' .. cls, tostring(tag))
      local tk = cls .. '|' .. proc .. '|' .. tenant
      if redis.call('HGET', T, tk) == tostring(tag) then redis.call('HDEL', T, tk) end
      -- (the streak counts interactive grants made while bulk waits)
      if cls == 'i' and nb > 0 then streak = streak + 1 else streak = 0 end
      if proc == me then mine(id, 1, now) else push(proc, id .. '|1|' .. now) end
    end
  end
  if granted > 0 then redis.call('HSET', S, 'streak', streak) end
  if redis.call('ZCARD', QI) + redis.call('ZCARD', QB) == 0 then
    redis.call('DEL', T, W)  -- nobody waits: fair-share tags restart from zero
    redis.call('HSET', S, 'vi', 0, 'vb', 0, 'streak', 0)
  elseif hint < 0 then
    hint = 0  -- the batch cap stopped us: more fits now
  end
  -- what others granted for me since my last call
  local gkey = GPREFIX .. me
  local got = redis.call('LRANGE', gkey, 0, -1)
  if #got > 0 then
    redis.call('DEL', gkey)
    for _, entry in ipairs(got) do
      local id, code, value = string.match(entry, '^([^|]+)|(%-?%d+)|(%-?%d+)$')
      if id then mine(id, tonumber(code), tonumber(value)) end
    end
  end
  save(B)
  touch()
  local head = {now, B.t, B.r, B.i, hint, B.ts}
  for _, x in ipairs(out) do head[#head + 1] = x end
  return head
end

if OP == 'finish' then
  -- ARGV[13..]: id, mode ('s' settle: charge = ARGV[15]; 'c' release counted; 'u' uncounted),
  -- charge, headers ('1': the 7 fields of observe follow at 17..23) -> {found, delta}
  local id, mode, charged = ARGV[13], ARGV[14], tonumber(ARGV[15])
  local found, delta = 0, 0
  local t = finish(B, id, mode == 'u')
  if t then
    found = 1
    if mode == 's' then
      delta = charged - t
      B.td = math.max(0, B.td + delta)  -- a refund cannot fill past full; a charge may go into debt
    end
  end
  if ARGV[16] == '1' then B = observe(B, 17) end
  save(B)
  touch()
  return {found, delta}
end

if OP == 'observe' then
  -- ARGV[13..19]: limit tokens, limit requests, remaining tokens, remaining requests, limit
  -- images, remaining images ('' = absent), tolerance -> {resyncs}
  B = observe(B, 13)
  save(B)
  touch()
  return {num('resyncs')}
end

if OP == 'cooldown' then
  -- ARGV[13]: ms -> remaining cooldown ms (the longest pause wins). A 429 means the API's
  -- bucket holds less than ours (e.g. it admitted the first call of a burst late, while full):
  -- the buckets also give up the refill of the pause's extension, so the gap closes.
  local want = now + tonumber(ARGV[13])
  local until_ = math.max(now, num('cooldown'))
  if want > until_ then
    redis.call('HSET', S, 'cooldown', want)
    local ms = want - until_ + SLACK_MS  -- (+ the slack: we granted with that much to spare)
    B.td = B.td + ms * B.t / 60000
    B.rd = B.rd + ms * B.r / 60000
  end
  save(B)
  touch()
  return num('cooldown') - now
end

if OP == 'snapshot' then
  -- -> {now, tpm, rpm, ipm, ts, rs, is, td, rd, id, reserved, in_flight, cooldown_ms, resyncs,
  --     waiting interactive, waiting bulk, processes seen within ARGV[13] ms}
  local cd = num('cooldown') - now
  if cd < 0 then cd = 0 end
  local procs = redis.call('ZCOUNT', P, now - tonumber(ARGV[13]), '+inf')
  return {now, B.t, B.r, B.i, B.ts, B.rs, B.is, fmt(B.td), fmt(B.rd), fmt(B.id), num('res'),
    redis.call('ZCARD', F), cd, num('resyncs'), redis.call('ZCARD', QI), redis.call('ZCARD', QB),
    procs}
end

return redis.error_reply('unknown limiter op ' .. tostring(OP))
