-- Create jobs and put them in their lanes, honouring idempotency keys (one call per batch).
-- ARGV: 1 job key prefix, 2 lane prefix, 3 seq key prefix, 4 pending ttl (s), 5 idempotency ttl (s),
--       6 batch key ('' for none), 7 delayed key prefix, 8 recent-jobs key prefix, 9 recent-jobs cap,
--       10 followers key prefix, 11 callbacks watch, 12 result ttl (s), 13 stats, 14 ready, 15 wake,
--       16 recent-jobs trim period, 17 limiter key prefix (a not_before lowers the account's
--       delayed hint: lower_delayed_hint), then per operation: idempotency key ('' for none), job id, operation JSON, submitted at,
--       priority, account, not before (ms, '' for none), read key ('' for none: not a shareable
--       read), 1 if it may join another job's call, max age (ms, 0: no cached answer), has callback.
-- Each new job also enters its account's index of recent jobs (<recent prefix><account>:jobs,
-- scored by seq), so /ui lists recent jobs without scanning every one: trimmed to the cap when the
-- seqs a call reserved reach a multiple of the trim period (one trim per period, not per job), so it
-- holds the latest cap jobs at least and cap + period - 1 at most (only this script takes a seq).
-- A job with a not-before time still to come waits in its account's delayed set instead, and
-- goes to its lane (with its place) when that time comes. Either way its account is in the ready
-- set by then (at once for a lane, if its lanes were empty: else it is there already; at the
-- not-before time for the delayed set), and a waiting dispatcher is woken if this is sooner than
-- anything it waits for.
-- A job's lane is <lane prefix><account>:<priority>, scored by a per-account sequence, so the
-- oldest job of a lane is its lowest score.
-- Identical reads (spec 13; coalesce.py says which): a read with a max age takes the answer of the
-- last identical read that succeeded within it (finished now; its callback is left to the callbacks
-- watch, due at once: a producer builds no Celery message); else one that may join an identical
-- read still waiting or running becomes its follower (in no lane; it gets that call's answer, and
-- the call is lifted to its priority while it waits); else it leads, and is the call the next
-- identical reads join.
-- Returns a flat list: job id, 1 if created (0: the existing job for its idempotency key).
local job_prefix, lane_prefix, seq_prefix = ARGV[1], ARGV[2], ARGV[3]
local ttl, idem_ttl, batch, delayed_prefix = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7]
local recent_prefix, recent_cap = ARGV[8], tonumber(ARGV[9])
local followers_prefix, watch, result_ttl, stats = ARGV[10], ARGV[11], tonumber(ARGV[12]), ARGV[13]
local ready, wake, trim_period = ARGV[14], ARGV[15], tonumber(ARGV[16])
-- The Redis clock, read once and only when needed (issue 17: a job entering a lane that is not empty
-- needs none).
local clock = nil
local function now()
  clock = clock or now_ms()
  return clock
end
local out = {}
local to_trim = {}
local busy = {}  -- accounts whose lanes are known not to be empty (nothing in this call empties one)
local batch_counts, batch_last = {}, {}

local function add(fields, field, value)
  local n = #fields
  fields[n + 1], fields[n + 2] = field, value
end

-- The last identical read that succeeded at most `max_age` ms ago: its id and answer, or nil.
local function fresh_answer(read, max_age)
  if read == '' or max_age <= 0 then return nil end
  local v = redis.call('GET', read .. ':fresh')
  if not v then return nil end
  local src, at = string.match(v, '^(%w+):(%d+)$')
  if not src or now() - tonumber(at) > max_age then return nil end
  local r = redis.call('HMGET', job_prefix .. src, FIELD.status, FIELD.response)
  if r[1] ~= 'succeeded' or not r[2] then return nil end
  return src, r[2]
end

-- The identical read still waiting or running that a new one may join, or nil (also when it has
-- MAX_FOLLOWERS already: the next read leads a call of its own, so no finish step grows unbounded).
local MAX_FOLLOWERS = 100
local function leader_of(read)
  local leader = redis.call('GET', read)
  if not leader then return nil end
  local status = redis.call('HGET', job_prefix .. leader, FIELD.status)
  if not status or is_final(status) then return nil end
  if redis.call('SCARD', followers_prefix .. leader) >= MAX_FOLLOWERS then return nil end
  return leader
end

-- Writes to the same sorted set are gathered and made as one ZADD per set (issue 17: a batch of N
-- jobs of one account and lane costs one ZADD for its lane and one for its recent index, not N of
-- each): `pending[key]` is a flat list of scores and members, in submission order.
local pending, pending_order = {}, {}
local function zadd_later(key, score, member)
  local list = pending[key]
  if not list then
    list = {}
    pending[key] = list
    pending_order[#pending_order + 1] = key
  end
  list[#list + 1] = score
  list[#list + 1] = member
end
-- Make the gathered ZADDs (before anything reads a lane this call wrote: relane, and at the end).
local function zadd_gathered()
  for _, key in ipairs(pending_order) do
    local list = pending[key]
    for first = 1, #list, 1000 do  -- at most 500 pairs a command: Lua's unpack has a stack limit
      redis.call('ZADD', key, unpack(list, first, math.min(first + 999, #list)))
    end
  end
  pending, pending_order = {}, {}
end

-- Each account's sequence numbers for this call, reserved in one INCRBY with its first new job (as
-- many as it has operations here; one an idempotency key finds existing is left unused, a gap that
-- keeps the order). The recent index is trimmed when a reserved range reaches a multiple of the
-- trim period, so its bound holds with gaps too.
local remaining, next_seq, last_seq = {}, {}, {}
for i = 18, #ARGV, 11 do
  local account = ARGV[i + 5]
  remaining[account] = (remaining[account] or 0) + 1
end
local function new_seq(account)
  if not next_seq[account] or next_seq[account] > last_seq[account] then
    local n = remaining[account] + 1  -- this job's, and those after it (already taken off below)
    local last = redis.call('INCRBY', seq_prefix .. account, n)
    next_seq[account], last_seq[account] = last - n + 1, last
    if math.floor(last / trim_period) > math.floor((last - n) / trim_period) then
      to_trim[recent_prefix .. account .. ':jobs'] = true
    end
  end
  local seq = next_seq[account]
  next_seq[account] = seq + 1
  return seq
end

for i = 18, #ARGV, 11 do
  local idem, jid, op, submitted = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local priority, account, not_before = ARGV[i + 4], ARGV[i + 5], tonumber(ARGV[i + 6])
  local read, may_join, max_age, has_callback = ARGV[i + 7], ARGV[i + 8] == '1', tonumber(ARGV[i + 9]), ARGV[i + 10] == '1'
  remaining[account] = remaining[account] - 1
  local existing = false
  if idem ~= '' then
    local prev = redis.call('GET', idem)
    if prev and redis.call('EXISTS', job_prefix .. prev) == 1 then existing = prev end
  end
  if existing then
    table.insert(out, existing)
    table.insert(out, 0)
  else
    if idem ~= '' then redis.call('SET', idem, jid, 'EX', idem_ttl) end
    local key = job_prefix .. jid
    local seq = new_seq(account)
    local source, answer = fresh_answer(read, max_age)
    local leader = (not source) and may_join and read ~= '' and leader_of(read)
    -- The whole new hash in one HSET (its status included: a new job has none to move from).
    local status = source and 'succeeded' or 'queued'
    local fields = {FIELD.op, op, FIELD.attempts, 0, FIELD.submitted_at, submitted, FIELD.priority, priority,
                    FIELD.account, account, FIELD.seq, seq, FIELD.status, status}
    if batch ~= '' then
      add(fields, FIELD.batch, batch)
      batch_counts[status] = (batch_counts[status] or 0) + 1
      batch_last[priority] = seq
    end
    if read ~= '' then
      add(fields, FIELD.read, read)
      -- A read that may join no call is never named as one to join (below), so no follower ever
      -- waits on it: its finish skips the followers and the read key (issue 17: two commands). Only
      -- a writer of this version sets the mark, so a job without it takes the full finish.
      if not may_join then add(fields, FIELD.alone, '1') end
    end
    if source then
      add(fields, FIELD.response, answer); add(fields, FIELD.coalesced_with, source); add(fields, FIELD.finished_at, submitted)
      add(fields, FIELD.inflight, '0')
      if has_callback then add(fields, FIELD.cb, 'pending') end
    elseif leader then
      add(fields, FIELD.coalesced_with, leader)
    end
    redis.call('HSET', key, unpack(fields))
    if source then
      redis.call('EXPIRE', key, result_ttl)
      redis.call('HINCRBY', stats, 'jobs:succeeded', 1)
      redis.call('HINCRBY', stats, 'acct:' .. account .. ':reads_cached', 1)
      if has_callback then redis.call('ZADD', watch, now(), jid) end
    elseif leader then
      redis.call('EXPIRE', key, ttl)
      redis.call('SADD', followers_prefix .. leader, jid)
      redis.call('EXPIRE', followers_prefix .. leader, ttl)
      -- The call outlives every job waiting on it.
      extend(job_prefix .. leader, ttl)
      extend(read, ttl)
      redis.call('HINCRBY', stats, 'acct:' .. account .. ':reads_shared', 1)
      zadd_gathered()  -- the leader may be a job of this call, waiting to enter its lane
      relane(lane_prefix, job_prefix, followers_prefix, leader)
    else
      redis.call('EXPIRE', key, ttl)
      if may_join and read ~= '' then redis.call('SET', read, jid, 'EX', ttl) end
      if not_before and not_before > now() then
        redis.call('ZADD', delayed_prefix .. account, not_before, jid)
        lower_delayed_hint(ARGV[17] .. account .. ':state', not_before)
        make_ready(ready, wake, account, not_before)
      else
        if not busy[account] and not lanes_busy(lane_prefix, account) then make_ready(ready, wake, account, now()) end
        zadd_later(lane_prefix .. account .. ':' .. priority, seq, jid)
        busy[account] = true
      end
    end
    zadd_later(recent_prefix .. account .. ':jobs', seq, jid)
    table.insert(out, jid)
    table.insert(out, 1)
  end
end
zadd_gathered()
for recent in pairs(to_trim) do
  redis.call('ZREMRANGEBYRANK', recent, 0, -(recent_cap + 1))
end
if batch ~= '' then
  for status, n in pairs(batch_counts) do redis.call('HINCRBY', batch, 'n:' .. status, n) end
  local last = {}
  for priority, seq in pairs(batch_last) do add(last, 'last:' .. priority, seq) end
  if #last > 0 then redis.call('HSET', batch, unpack(last)) end
end
return out
