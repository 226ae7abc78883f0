-- uses: limiter, message
-- Give the free quota slots of the accounts that are due to their best waiting jobs, now, and hand
-- each to a worker. The accounts come from the ready set (keys.ready: account -> when its next slot
-- may be given), the due ones first (ZRANGEBYSCORE: O(log A + due), never a scan of every account);
-- or one account named in ARGV[10] (tests, tools). Each account served gets its exact next time in
-- the ready set (its next slot, or its first delayed job), or leaves it when nothing of it waits.
-- The best job is the oldest (lowest sequence) of the highest lane present. A job is given a slot
-- only when a call may start now, and only while the workers have a free thread for it.
-- KEYS: 1 ready, 2 wake, 3 quotas (hash: account -> 'limit window interval burst', ms), 4 dispatched
--       (zset: job id -> hand-off deadline), 5 running, 6 capacity (string: free threads of live
--       workers), 7 operations queue.
-- ARGV: 1 job key prefix, 2 lane prefix, 3 delayed key prefix, 4 limiter key prefix, 5 hand-off ms,
--       6 message template, 7 body embed JSON, 8 most slots per account and call, 9 most accounts per
--       call, 10 account ('' for the due ones).
-- Returns {outcome, dispatched, next ms, accounts without a stored quota...}: 'idle' (nothing due
-- waits), 'wait' (the next slot is later), 'busy' (no free thread: a finished job wakes a
-- dispatcher), 'more' (a limit was reached: call again), 'unknown' (the named account has no quota
-- stored); next ms is the time until the earliest account in the ready set (the named one, with
-- ARGV[10]) is due, -1 when there is none (or, serving the due ones, when 'busy'). An account
-- without a quota leaves the set: a worker that knows it stores its quota and puts it back
-- (scheduler.Dispatcher.publish).
local job_prefix, lane_prefix, delayed_prefix, limiter_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local handoff, template, embed = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local most, most_accounts, named = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local now = now_ms()
redis.call('DEL', KEYS[2])  -- this call serves every wake-up pushed before it

local free = nil  -- threads free for new hand-offs; read once, when first needed (-1: no limit known)
local function free_threads()
  if free == nil then
    local capacity = tonumber(redis.call('GET', KEYS[6]) or '-1')
    if capacity < 0 then
      free = -1
    else
      free = math.max(0, capacity - redis.call('ZCARD', KEYS[4]) - redis.call('ZCARD', KEYS[5]))
    end
  end
  return free
end

-- Serve one account: returns its outcome and how many slots it gave.
local function serve(account)
  local quota = redis.call('HGET', KEYS[3], account)
  if not quota then  -- no quota stored for it: out of the set until a worker that knows it says so
    redis.call('ZREM', KEYS[1], account)
    return 'unknown', 0
  end
  local l, w, i, b = string.match(quota, '^(%d+) (%d+) (%d+) (%d+)$')
  local limit, window, interval, tau = tonumber(l), tonumber(w), tonumber(i), tonumber(b)
  local base = lane_prefix .. account .. ':'
  local lanes = {base .. 'urgent', base .. 'normal', base .. 'bulk'}
  local delayed = delayed_prefix .. account
  local lim = limiter_prefix .. account
  local log, pause, tat, learned = lim .. ':log', lim .. ':pause', lim .. ':tat', lim .. ':learned'

  -- Retries and deferrals that are due go back to their lane, keeping their age.
  for _, jid in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 200)) do
    redis.call('ZREM', delayed, jid)
    local key = job_prefix .. jid
    local status = redis.call('HGET', key, FIELD.status)
    if status == 'queued' or status == 'retrying' then
      local lane, seq = lane_of(lane_prefix, key)
      redis.call('ZADD', lane, seq, jid)
    end
  end

  local given = 0
  while true do
    if given > 0 and free == 0 then  -- no thread for another: stays due, a finished job wakes a dispatcher
      redis.call('ZADD', KEYS[1], 'LT', now, account)
      return 'busy', given
    end
    local lane, best = nil, nil
    for n = 1, 3 do
      local head = redis.call('ZRANGE', lanes[n], 0, 0)
      if head[1] then lane, best = lanes[n], head[1]; break end
    end
    if not best then
      local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
      if first[1] then
        redis.call('ZADD', KEYS[1], first[2], account)
      else
        redis.call('ZREM', KEYS[1], account)
      end
      return 'idle', given
    end
    if free_threads() == 0 then  -- stays due: the next finished job wakes a dispatcher
      redis.call('ZADD', KEYS[1], 'LT', now, account)
      return 'busy', given
    end
    local at, _, spacing, tat_ms = next_slot(log, pause, tat, learned, now, limit, window, interval, tau)
    if at > now then
      redis.call('ZADD', KEYS[1], at, account)
      return 'wait', given
    end
    if given >= most then
      redis.call('ZADD', KEYS[1], now, account)
      return 'more', given
    end
    local key = job_prefix .. best
    redis.call('ZREM', lane, best)
    local job = redis.call('HMGET', key, FIELD.status, FIELD.dispatch)
    if job[1] == 'queued' or job[1] == 'retrying' then
      local dispatch = tonumber(job[2] or '0') + 1
      take(log, tat, now, best .. '.' .. dispatch, window, spacing, tat_ms)
      redis.call('HSET', key, FIELD.dispatch, dispatch, FIELD.dispatched_at, now)
      redis.call('ZADD', KEYS[4], now + handoff, best)
      redis.call('LPUSH', KEYS[7], job_message(template, embed, best, dispatch, account))
      given = given + 1
      if free > 0 then free = free - 1 end
    end
  end
end

local function due_in(score)
  if not score then return -1 end
  return math.max(0, tonumber(score) - now)
end

if named ~= '' then
  local outcome, given = serve(named)
  local out = {outcome, given, due_in(redis.call('ZSCORE', KEYS[1], named))}
  if outcome == 'unknown' then table.insert(out, named) end
  return out
end

local outcome, total, unknown = 'idle', 0, {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, most_accounts)
for _, account in ipairs(due) do
  local o, given = serve(account)
  total = total + given
  if o == 'busy' then outcome = 'busy'; break end
  if o == 'unknown' then table.insert(unknown, account) end
  if o == 'more' or (o == 'wait' and outcome == 'idle') then outcome = o end
end
if #due >= most_accounts and outcome ~= 'busy' then outcome = 'more' end
-- 'busy': a finished job wakes a dispatcher, which does not need the earliest due time (-1).
local first = outcome == 'busy' and {} or redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local out = {outcome, total, due_in(first[2])}
for _, account in ipairs(unknown) do table.insert(out, account) end
return out
