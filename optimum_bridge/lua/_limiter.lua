-- The quota, shared by the scripts that give slots (dispatch, take_slot) and the forecast.
-- A slot may start at `now` when (1) no pause is in force, (2) fewer than `limit` starts lie in
-- the last `window` ms (the sliding log: exact, never more than `limit` in any window), and (3)
-- the pacer allows it: starts come one every `interval` ms, with up to `tau` ms of burst credit
-- (GCRA; tau = 0 gives evenly spaced slots under a backlog), and (4) the API's last statement of
-- its remaining calls, if any, is not used up (recorded only when the API counted calls the log
-- does not know, e.g. another user of the same client: otherwise the log's wall, to the ms, is the
-- better answer than a reset stated in whole seconds).
--
-- The limit in force is min(configured, learned): the learned fields hold what the API stated in
-- its headers (h_limit until h_until, normalised to the configured window; h_remaining calls after
-- h_seen until h_reset) and what its unexplained 429s taught (a_limit since a_since; after a_hold
-- windows it grows by one per window back to the configured limit: additive increase, computed
-- here from the clock, so no process has to write it).
--
-- Everything but the log is in one hash per account, its limiter state (``keys.limiter_state``;
-- issue 17: one HMGET per slot where there were four reads): the learned fields, `pause` (ms until
-- which no call starts, after a 429), `tat` (the pacer's theoretical arrival time, ms), `quota`
-- (the account's 'limit window interval burst', a copy of its entry in ``keys.quotas``) and
-- `look_delayed` (ms before which no job of the account's delayed set is due: lua/_serve.lua).
-- It has no TTL: it lives and dies with its account. Expired learned fields are harmless (every
-- reader checks their times) and are dropped by the next lesson (`forget_stale`).
-- Version safety: the learned fields and the pause are also written where the previous version
-- reads them (the `:learned` hash, with its TTL, and the `:pause` key), since they are written
-- only after a 429 or a rate-limit header. The pacer's TAT (written per slot) is not: a worker of
-- the previous version paces on its own `:tat` key during a rolling upgrade, and the shared log,
-- which both versions count, stays the exact guarantee of the quota.

-- The state's fields in the order the limiter reads them: the learned ones first (1-8, the `f`
-- of limit_of and stated_wall), then pause (9), tat (10), quota (11) and look_delayed (12).
local STATE_FIELDS = {'h_limit', 'h_until', 'a_limit', 'a_since', 'a_hold', 'h_remaining', 'h_seen', 'h_reset',
                      'pause', 'tat', 'quota', 'look_delayed'}
local LEARNED_N, S_PAUSE, S_TAT, S_QUOTA, S_LOOK = 8, 9, 10, 11, 12

-- Everything the limiter reads of an account's state, in one HMGET.
local function state_fields(state)
  return redis.call('HMGET', state, unpack(STATE_FIELDS))
end

-- The learned fields alone (1-8), in one HMGET.
local function learned_fields(state)
  return redis.call('HMGET', state, unpack(STATE_FIELDS, 1, LEARNED_N))
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

-- The learned limit of the account at `now` (the configured `limit` when nothing is learned), from
-- its limiter state (or any hash with the learned fields).
local function learned_limit(state, now, limit, window)
  return limit_of(learned_fields(state), now, limit, window)
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

-- When the next slot may start (ms, Redis clock), given the log and the account's state `f` (its
-- fields as state_fields read them: the pause, the pacer, what was learned); returns that moment,
-- the limit and interval in force, and the pacer's TAT (for `take`), then what the moment after
-- one more start is computed from (next_after_take): the burst credit in force, the pause, the
-- starts in the log and the learned fields.
-- The log is trimmed to the window only when it may be full: under the limit with its old starts
-- counted, it is under it without them (readers count a window with ZCOUNT, or trim first).
local function next_slot(log, f, now, limit, window, interval, tau)
  limit, interval, tau = effective(f, now, limit, window, interval, tau)
  local at = now
  local pause, tat = tonumber(f[S_PAUSE] or '0'), tonumber(f[S_TAT] or '0')
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
-- (`tat`: the pacer's TAT as next_slot read it in the same script), in one HSET of the account's
-- `state` with the field, value pairs of `also` (what else the caller has to write there; may be
-- nil). Returns the new TAT (as written), for a caller that gives another slot in the same step.
-- The log has no TTL (issue 17: one command less per call): it holds at most `limit` starts plus
-- those older than the window not yet trimmed (next_slot trims when it may be full), and goes
-- with its account (accounts/store.py deletes an account's limiter keys). Nor has the state.
local function take(log, state, now, member, interval, tat, also)
  redis.call('ZADD', log, now, member)
  if tat < now then tat = now end
  -- Formatted: Lua would write a number with 14 digits, losing the sub-millisecond part of a fast pacer.
  local written = string.format('%.3f', tat + interval)
  local fields = {'tat', written}
  for _, v in ipairs(also or {}) do table.insert(fields, v) end
  redis.call('HSET', state, unpack(fields))
  return written
end

-- The learned fields in groups, each with the field of its last relevant moment: what the headers
-- stated (until h_until), the remaining calls they stated (until h_reset), what 429s taught (until
-- the limit is back: computed in forget_stale and keep_learned).
local STATED = {'h_limit', 'h_until', 'h_reason', 'h_since'}
local REMAINING = {'h_remaining', 'h_seen', 'h_reset'}
local TAUGHT = {'a_limit', 'a_since', 'a_hold', 'a_reason', 'a_at'}

-- When each group stops mattering: the statement's end, the reset, the moment the limit taught by
-- 429s is back at the configured one (nil: the group is absent).
local function learned_ends(state, limit, window)
  local f = redis.call('HMGET', state, 'h_until', 'h_reset', 'a_limit', 'a_since', 'a_hold')
  local back = nil
  local a_limit, a_since, a_hold = tonumber(f[3]), tonumber(f[4]), tonumber(f[5] or '0')
  if a_limit and a_since then back = a_since + (a_hold + math.max(0, limit - a_limit)) * window end
  return tonumber(f[1]), tonumber(f[2]), back
end

-- Before a new lesson is written: drop from the state the groups that stopped mattering a window
-- ago or more, as the TTL of the previous version's learned hash forgot them (a lesson reads the
-- last one: a limit stated again starts a new `since`, a 429 long after the last episode starts a
-- new one). In between, expired fields are harmless: every reader checks their times.
local function forget_stale(state, now, limit, window)
  local stated, reset, back = learned_ends(state, limit, window)
  local gone = {}
  for _, g in ipairs({{stated, STATED}, {reset, REMAINING}, {back, TAUGHT}}) do
    if g[1] and g[1] + window <= now then
      for _, name in ipairs(g[2]) do table.insert(gone, name) end
    end
  end
  if #gone > 0 then redis.call('HDEL', state, unpack(gone)) end
end

-- Write learned fields (name, value pairs) to the account's state and to the previous version's
-- learned hash (`legacy`), which its workers read during a rolling upgrade.
local function learn(state, legacy, pairs_)
  redis.call('HSET', state, unpack(pairs_))
  redis.call('HSET', legacy, unpack(pairs_))
end

-- Drop learned fields from both.
local function unlearn(state, legacy, names)
  redis.call('HDEL', state, unpack(names))
  redis.call('HDEL', legacy, unpack(names))
end

-- After a lesson: the previous version's learned hash keeps its TTL (a window past the last moment
-- that matters), so a forgotten lesson leaves no key behind. The state needs none (forget_stale).
local function keep_learned(state, legacy, now, limit, window)
  local last = now
  local stated, reset, back = learned_ends(state, limit, window)
  for _, t in ipairs({stated or 0, reset or 0, back or 0}) do
    if t > last then last = t end
  end
  redis.call('PEXPIRE', legacy, last - now + window)
end
