-- The quota, shared by the scripts that give slots (dispatch, take_slot) and the forecast.
-- A slot may start at `now` when (1) no pause is in force, (2) fewer than `limit` starts lie in
-- the last `window` ms (the sliding log: exact, never more than `limit` in any window), and (3)
-- the pacer allows it: starts come one every `interval` ms, with up to `tau` ms of burst credit
-- (GCRA; tau = 0 gives evenly spaced slots under a backlog), and (4) the API's last statement of
-- its remaining calls, if any, is not used up (recorded only when the API counted calls the log
-- does not know, e.g. another user of the same client: otherwise the log's wall, to the ms, is the
-- better answer than a reset stated in whole seconds).
--
-- The limit in force is min(configured, learned): the learned hash (``keys.limiter_learned``)
-- holds what the API stated in its headers (h_limit until h_until, normalised to the configured
-- window; h_remaining calls after h_seen until h_reset) and what its unexplained 429s taught
-- (a_limit since a_since; after a_hold windows it grows by one per window back to the configured
-- limit: additive increase, computed here from the clock, so no process has to write it).

-- The learned hash's fields the limiter reads, in one HMGET (`learned_fields`).
local function learned_fields(learned)
  return redis.call('HMGET', learned, 'h_limit', 'h_until', 'a_limit', 'a_since', 'a_hold',
                    'h_remaining', 'h_seen', 'h_reset')
end

-- The learned limit at `now` from the fields `f` (the configured `limit` when nothing is learned).
local function limit_of(f, now, limit, window)
  local best = limit
  local h_limit, h_until = tonumber(f[1]), tonumber(f[2])
  if h_limit and h_until and h_until > now and h_limit < best then best = h_limit end
  local a_limit, a_since, a_hold = tonumber(f[3]), tonumber(f[4]), tonumber(f[5] or '0')
  if a_limit and a_since then
    local steps = math.floor((now - a_since) / window) - a_hold
    if steps > 0 then a_limit = a_limit + steps end
    if a_limit < best then best = a_limit end
  end
  if best < 1 then best = 1 end
  return best
end

-- The learned limit of the account at `now` (the configured `limit` when nothing is learned).
local function learned_limit(learned, now, limit, window)
  return limit_of(learned_fields(learned), now, limit, window)
end

-- The quota in force: limit, interval and burst credit, the learned limit (fields `f`) applied.
local function effective(f, now, limit, window, interval, tau)
  local l = limit_of(f, now, limit, window)
  if l >= limit then return limit, interval, tau end
  local iv = math.max(interval, math.ceil(window / l))
  local burst = math.min(math.floor(tau / interval), l - 1)
  return l, iv, burst * iv
end

-- When the API's statement of its remaining calls lets the next call start (0: no statement).
-- lua/limiter_stated.lua records one only when the API counted calls the log does not know.
local function stated_wall(log, f, now)
  local remaining, seen, reset = tonumber(f[6]), tonumber(f[7]), tonumber(f[8])
  if not (remaining and seen and reset) or reset <= now then return 0 end
  if redis.call('ZCOUNT', log, seen, '+inf') >= remaining then return reset end  -- started since (same ms included)
  return 0
end

-- When the next slot may start (ms, Redis clock), given the log, the pause, the pacer and what was
-- learned; returns that moment, the limit and interval in force, and the pacer's TAT (for `take`),
-- then what the moment after one more start is computed from (next_after_take): the burst credit in
-- force, the pause, the starts in the log and the learned fields.
-- The log is trimmed to the window only when it may be full: under the limit with its old starts
-- counted, it is under it without them (readers count a window with ZCOUNT, or trim first).
local function next_slot(log, pause_key, tat_key, learned, now, limit, window, interval, tau)
  local f = learned_fields(learned)
  limit, interval, tau = effective(f, now, limit, window, interval, tau)
  local at = now
  local pt = redis.call('MGET', pause_key, tat_key)  -- one read for both (issue 17)
  local pause, tat = tonumber(pt[1] or '0'), tonumber(pt[2] or '0')
  if pause > at then at = pause end
  if tat - tau > at then at = tat - tau end
  local n = redis.call('ZCARD', log)
  if n >= limit then
    redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
    n = redis.call('ZCARD', log)
  end
  if n >= limit then
    local nth = redis.call('ZRANGE', log, n - limit, n - limit, 'WITHSCORES')
    local wall = tonumber(nth[2]) + window
    if wall > at then at = wall end
  end
  local stated = stated_wall(log, f, now)
  if stated > at then at = stated end
  return at, limit, interval, tat, tau, pause, n, f
end

-- When the next slot may start after one more start at `now` (take), from what next_slot returned
-- before it, without reading anything again; nil when the window is about to be full or the API
-- stated its remaining calls (then only next_slot knows).
local function next_after_take(now, limit, interval, tat, tau, pause, n, f)
  if n + 1 >= limit or f[6] then return nil end
  return math.max(now, pause, math.max(tat, now) + interval - tau)
end

-- Record a start at `now` under `member`, and move the pacer on by the `interval` in force
-- (`tat`: the pacer's TAT as next_slot read it in the same script, else it is read here).
-- The log has no TTL (issue 17: one command less per call): it holds at most `limit` starts plus
-- those older than the window not yet trimmed (next_slot trims when it may be full), and goes
-- with its account (accounts/store.py deletes an account's limiter keys).
local function take(log, tat_key, now, member, window, interval, tat)
  redis.call('ZADD', log, now, member)
  tat = tat or tonumber(redis.call('GET', tat_key) or '0')
  if tat < now then tat = now end
  -- Formatted: Lua would write a number with 14 digits, losing the sub-millisecond part of a fast pacer.
  redis.call('SET', tat_key, string.format('%.3f', tat + interval), 'PX', math.ceil(window + interval) + 1000)
end

-- When the learned hash has nothing left to say (every statement expired, the learned limit grown
-- back to the configured one): its TTL, so a forgotten lesson leaves no key behind.
local function keep_learned(learned, now, limit, window)
  local f = redis.call('HMGET', learned, 'h_until', 'h_reset', 'a_limit', 'a_since', 'a_hold')
  local last = now
  for i = 1, 2 do
    local t = tonumber(f[i])
    if t and t > last then last = t end
  end
  local a_limit, a_since, a_hold = tonumber(f[3]), tonumber(f[4]), tonumber(f[5] or '0')
  if a_limit and a_since then
    local back = a_since + (a_hold + math.max(0, limit - a_limit)) * window
    if back > last then last = back end
  end
  redis.call('PEXPIRE', learned, last - now + window)
end
