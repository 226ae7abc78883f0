-- uses: limiter, message, serve
-- Give the free quota slots of the accounts that are due to their best waiting jobs, now, and hand
-- each to a worker as its Celery message (serve, in _serve.lua). The accounts come from the ready
-- set (keys.ready: account -> when its next slot may be given), the due ones first
-- (ZRANGEBYSCORE: O(log A + due), never a scan of every account); or one account named in ARGV[10]
-- (tests, tools).
-- KEYS: 1 ready, 2 wake, 3 quotas (hash: account -> 'limit window interval burst', ms), 4 dispatched
--       (zset: job id -> hand-off deadline), 5 leases (zset: job id -> lease deadline), 6 capacity
--       (string: free threads of live workers), 7 operations queue.
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
local most_accounts, named = tonumber(ARGV[9]), ARGV[10]
local now = now_ms()
redis.call('DEL', KEYS[2])  -- this call serves every wake-up pushed before it
local S = {
  now = now, job_prefix = ARGV[1], lane_prefix = ARGV[2], delayed_prefix = ARGV[3], limiter_prefix = ARGV[4],
  ready = KEYS[1], wake = KEYS[2], quotas = KEYS[3], dispatched = KEYS[4], leases = KEYS[5], capacity = KEYS[6],
  queue = KEYS[7], handoff = tonumber(ARGV[5]), template = ARGV[6], embed = ARGV[7], most = tonumber(ARGV[8]),
}

-- Serve one account; one without a stored quota leaves the ready set (see above).
local function serve_or_drop(account)
  local outcome, given = serve(account, S)
  if outcome == 'unknown' then redis.call('ZREM', KEYS[1], account) end
  return outcome, given
end

local function due_in(score)
  if not score then return -1 end
  return math.max(0, math.ceil(tonumber(score) - now))
end

if named ~= '' then
  local outcome, given = serve_or_drop(named)
  local out = {outcome, given, due_in(redis.call('ZSCORE', KEYS[1], named))}
  if outcome == 'unknown' then table.insert(out, named) end
  return out
end

local outcome, total, unknown = 'idle', 0, {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, most_accounts)
for _, account in ipairs(due) do
  local o, given = serve_or_drop(account)
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
