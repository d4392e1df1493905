"""The Lua scripts: every change to a limit's state is one atomic script on Redis.

Model: a sliding window log. Each grant is an entry (id -> "tokens,requests") scored by its grant
time; it counts against the limit until ``window_ms`` (60 s + margin) after the grant. A request is
granted only if, with it, the window holds at most TPM tokens and RPM requests. That is stricter
than OpenAI's continuously refilled bucket (which starts full and refills TPM/60 per second): a
sequence whose every 60-s window is under the limit never empties such a bucket, so the API never
answers 429, and ``max_tokens_in_any_60s`` stays at or under TPM by construction.

Counters in the state hash (``tok``, ``req``: all entries in the window; ``res``: the in-flight
part) make each call O(expired entries) instead of O(window).

Time is Redis's ``TIME`` (one clock for every host) unless the caller passes ``now_ms`` (tests).
It is made monotonic: when it goes back, an offset stored in the state absorbs the jump, so
capacity is neither freed early nor frozen until the clock catches up.

Settling (or releasing as counted) re-scores an entry to the time of the answer, which is after
the API admitted the call: so however late the API admitted it (slow upload, a busy server), the
entry stays in our window for a full window after that admission. Entries in flight do not leave
the window at all until settled or released (or ``grace_ms`` later, when their worker died).

Every script takes KEYS = state, window, entries, inflight and ARGV[1..4] = now_ms ('' = TIME),
window_ms, ttl_ms, grace_ms; its own arguments follow.
"""

from __future__ import annotations

PRELUDE = r"""
pcall(redis.replicate_commands)
local S, W, E, R = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local WINDOW = tonumber(ARGV[2])
local TTL = tonumber(ARGV[3])
local GRACE = tonumber(ARGV[4])

local function num(field)
  return tonumber(redis.call('HGET', S, field) or '0') or 0
end

-- HINCRBY by an integer; Lua 5.1 renders -0 as "-0", which Redis rejects: skip zero deltas.
local function incr(field, delta)
  if delta ~= 0 then redis.call('HINCRBY', S, field, string.format('%d', delta)) end
end

local function clock()
  local raw
  if ARGV[1] ~= '' then
    raw = tonumber(ARGV[1])
  else
    local t = redis.call('TIME')
    raw = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  local offset = num('offset')
  local last = num('last')
  local now = raw + offset
  if now < last then
    offset = offset + (last - now)
    now = last
    redis.call('HSET', S, 'offset', offset)
  end
  redis.call('HSET', S, 'last', now)
  return now
end

local function parse(v)
  local t, q = string.match(v, '^(%-?%d+),(%-?%d+)$')
  return tonumber(t), tonumber(q)
end

local function prune(now)
  local old = redis.call('ZRANGEBYSCORE', W, '-inf', now - WINDOW, 'WITHSCORES')
  if #old > 0 then
    local tok, req, res, gone = 0, 0, 0, {}
    for i = 1, #old, 2 do
      local id = old[i]
      local inflight = redis.call('SISMEMBER', R, id) == 1
      -- In flight: the API may admit it later than we granted it, so it counts until settled or
      -- released (which re-score it), or until GRACE says its worker is gone.
      if not inflight or tonumber(old[i + 1]) <= now - WINDOW - GRACE then
        gone[#gone + 1] = id
        local v = redis.call('HGET', E, id)
        if v then
          local t, q = parse(v)
          tok = tok + t
          req = req + q
          if inflight then
            redis.call('SREM', R, id)
            res = res + t
          end
        end
      end
    end
    for i = 1, #gone, 500 do
      local chunk = {unpack(gone, i, math.min(i + 499, #gone))}
      redis.call('HDEL', E, unpack(chunk))
      redis.call('ZREM', W, unpack(chunk))
    end
    incr('tok', -tok)
    incr('req', -req)
    incr('res', -res)
  end
  if redis.call('ZCARD', W) == 0 then
    -- nothing in the window: the counters must be zero (self-heal after keys expired apart)
    redis.call('HSET', S, 'tok', 0, 'req', 0, 'res', 0)
    redis.call('DEL', E, R)
  end
end

local function pick(cfg, disc, def)
  if cfg > 0 and disc > 0 then
    if disc < cfg then return disc, 'discovered' end
    return cfg, 'configured'
  end
  if cfg > 0 then return cfg, 'configured' end
  if disc > 0 then return disc, 'discovered' end
  return def, 'default'
end

-- limits(cfg_tpm, cfg_rpm, def_tpm, def_rpm) -> tpm, rpm, tpm_source, rpm_source
local function limits(ct, cr, dt, dr)
  local tpm, ts = pick(ct, num('disc_tpm'), dt)
  local rpm, rs = pick(cr, num('disc_rpm'), dr)
  return tpm, rpm, ts, rs
end

local function touch()
  for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, TTL) end
end
"""

# ARGV[5..]: tokens, cfg_tpm, cfg_rpm, def_tpm, def_rpm, id, scan_cap
# -> {1, 0, now, tpm, rpm} granted | {0, wait_ms, now, tpm, rpm} wait
#    | {-1, tpm, now, tpm, rpm} too large
ACQUIRE = (
    PRELUDE
    + r"""
local tokens = tonumber(ARGV[5])
local now = clock()
prune(now)
local tpm, rpm, ts = limits(tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]),
  tonumber(ARGV[9]))
if tokens > tpm then return {-1, tpm, now, tpm, rpm} end
local cd = num('cooldown')
if cd > now then return {0, cd - now, now, tpm, rpm} end
-- Limit unknown (not configured, not yet discovered): one probe call at a time until an answer
-- brings the headers (or shows the server sends none), so a fleet never bursts past a small limit.
if ts == 'default' and num('nohdr') == 0 and redis.call('SCARD', R) > 0 then
  return {0, 100, now, tpm, rpm}
end
local tok, req = num('tok'), num('req')
if tok + tokens <= tpm and req + 1 <= rpm then
  local id = ARGV[10]
  redis.call('ZADD', W, now, id)
  redis.call('HSET', E, id, tokens .. ',1')
  redis.call('SADD', R, id)
  incr('tok', tokens)
  incr('req', 1)
  incr('res', tokens)
  touch()
  return {1, 0, now, tpm, rpm}
end
-- Denied: when will enough of the oldest entries have left the window?
local need_t, need_r = tok + tokens - tpm, req + 1 - rpm
local entries = redis.call('ZRANGE', W, 0, tonumber(ARGV[11]) - 1, 'WITHSCORES')
local ft, fr, wait = 0, 0, WINDOW
for i = 1, #entries, 2 do
  local v = redis.call('HGET', E, entries[i])
  if v then
    local t, q = parse(v)
    ft, fr = ft + t, fr + q
  end
  wait = tonumber(entries[i + 1]) + WINDOW - now + 1
  if ft >= need_t and fr >= need_r then break end
end
if wait < 1 then wait = 1 end
return {0, wait, now, tpm, rpm}
"""
)

# ARGV[5..]: id, new_tokens, rescore ('1': count from now) -> {1, delta} | {0, 0} when gone
SETTLE = (
    PRELUDE
    + r"""
local now = clock()
prune(now)
local id, new = ARGV[5], tonumber(ARGV[6])
local v = redis.call('HGET', E, id)
if not v then return {0, 0} end
local t, q = parse(v)
redis.call('HSET', E, id, new .. ',' .. q)
if ARGV[7] == '1' then redis.call('ZADD', W, 'XX', now, id) end
incr('tok', new - t)
if redis.call('SREM', R, id) == 1 then incr('res', -t) end
return {1, new - t}
"""
)

# ARGV[5..]: id, counted ('1' keeps the charge, '0' gives tokens and request back), rescore
# -> {1|0, tokens}
RELEASE = (
    PRELUDE
    + r"""
local now = clock()
prune(now)
local id, counted = ARGV[5], ARGV[6]
local v = redis.call('HGET', E, id)
if not v then return {0, 0} end
local t, q = parse(v)
if redis.call('SREM', R, id) == 1 then incr('res', -t) end
if counted == '1' then
  if ARGV[7] == '1' then redis.call('ZADD', W, 'XX', now, id) end
else
  redis.call('ZREM', W, id)
  redis.call('HDEL', E, id)
  incr('tok', -t)
  incr('req', -q)
end
return {1, t}
"""
)

# ARGV[5..]: limit_t, limit_r, remaining_t, remaining_r ('' = absent), cfg_tpm, cfg_rpm, def_tpm,
# def_rpm, tolerance (fraction), id -> {tokens added, requests added}
# When the API says fewer remain than our window implies, someone else uses the key: their usage
# goes into the window as one entry, and leaves it like ours.
OBSERVE = (
    PRELUDE
    + r"""
local now = clock()
prune(now)
if ARGV[5] == '' and ARGV[6] == '' and ARGV[7] == '' and ARGV[8] == '' then
  redis.call('HSET', S, 'nohdr', 1)  -- a server without rate-limit headers: defaults apply
end
if ARGV[5] ~= '' then redis.call('HSET', S, 'disc_tpm', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', S, 'disc_rpm', ARGV[6]) end
local tpm, rpm = limits(tonumber(ARGV[9]), tonumber(ARGV[10]),
  tonumber(ARGV[11]), tonumber(ARGV[12]))
local tol = tonumber(ARGV[13])
local add_t, add_r = 0, 0
if ARGV[7] ~= '' then
  local d = (tpm - num('tok')) - tonumber(ARGV[7])
  if d > math.max(1, tol * tpm) then add_t = d end
end
if ARGV[8] ~= '' then
  local d = (rpm - num('req')) - tonumber(ARGV[8])
  if d > math.max(1, tol * rpm) then add_r = d end
end
if add_t > 0 or add_r > 0 then
  local id = ARGV[14]
  redis.call('ZADD', W, now, id)
  redis.call('HSET', E, id, add_t .. ',' .. add_r)
  incr('tok', add_t)
  incr('req', add_r)
  incr('resyncs', 1)
end
touch()
return {add_t, add_r}
"""
)

# ARGV[5..]: ms -> remaining cooldown ms (the longest cooldown wins)
COOLDOWN = (
    PRELUDE
    + r"""
local now = clock()
local want = now + tonumber(ARGV[5])
if want > num('cooldown') then redis.call('HSET', S, 'cooldown', want) end
touch()
return num('cooldown') - now
"""
)

# ARGV[5..]: cfg_tpm, cfg_rpm, def_tpm, def_rpm
# -> {now, tpm, rpm, tpm_src, rpm_src, tok, req, res, cooldown_ms, resyncs, oldest_ms_ago}
SNAPSHOT = (
    PRELUDE
    + r"""
local now = clock()
prune(now)
local tpm, rpm, ts, rs = limits(tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]),
  tonumber(ARGV[8]))
local cd = num('cooldown') - now
if cd < 0 then cd = 0 end
local oldest = redis.call('ZRANGE', W, 0, 0, 'WITHSCORES')
local age = -1
if #oldest > 0 then age = now - tonumber(oldest[2]) end
return {now, tpm, rpm, ts, rs, num('tok'), num('req'), num('res'), cd, num('resyncs'), age}
"""
)
