-- Shared by every script (prepended by optimum_bridge/lua.py; FIELD is generated there from
-- jobs.JobField, so the job hash's field names are declared once, in Python).

-- Milliseconds on the Redis server's clock: every process shares it, whatever its own clock says.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Delete a lease or lock only if `owner` still holds it (a lease taken over is left alone).
local function release_if_owner(key, owner)
  if redis.call('GET', key) == owner then
    return redis.call('DEL', key)
  end
  return 0
end

-- Job leases (keys.leases, a sorted set: job id -> deadline, ms, Redis clock; the holder is the job
-- hash's FIELD.owner, written by the caller in the HSET that sets the job running). A lease is live
-- while its deadline is after now; one that ran out is recovery's (recover.lua), or anyone's to take.
-- Take job `jid`'s lease until now + ms: true, or false and the deadline of another's live lease.
local function take_lease(leases, jid, now, ms)
  if redis.call('ZADD', leases, 'NX', now + ms, jid) == 1 then return true end
  local deadline = tonumber(redis.call('ZSCORE', leases, jid))
  if deadline > now then return false, deadline end
  redis.call('ZADD', leases, 'XX', now + ms, jid)
  return true
end

-- Whether `owner` holds job `jid`'s (hash `key`) lease now: it is the owner, and the lease is live.
local function lease_held(leases, key, jid, owner, now)
  if redis.call('HGET', key, FIELD.owner) ~= owner then return false end
  return tonumber(redis.call('ZSCORE', leases, jid) or '0') > now
end

-- Whether a job's operation (its JSON) has a callback (a key "callback" in its metadata is not one).
local function has_callback(op_json)
  local ok, op = pcall(cjson.decode, op_json)
  return ok and type(op) == 'table' and type(op.callback) == 'table'
end

-- The counts of API calls (issue 17) wait in a pending list, one entry per script call, and are
-- folded into their hashes when the list reaches its bound, and by every reader just before it reads
-- them (process.metrics): one RPUSH per script call instead of one command per counter. An entry is
-- (key, field, amount, ttl) quadruples, their words joined by spaces (no key or field has one), ttl
-- '-' for none. `counted` holds this script call's, until add_counts pushes them.
local counted = {}

-- Count `amount` (an integer) more on `field` of hash `key`, in this script call's entry (add_counts
-- pushes it).
local function count(key, field, amount)
  counted[#counted + 1] = key .. ' ' .. field .. ' ' .. amount .. ' -'
end

-- Whether the words `w` of an entry are whole quadruples, each amount a number and each ttl '-' or one.
local function counts_entry_ok(w)
  if #w == 0 or #w % 4 ~= 0 then return false end
  for i = 1, #w, 4 do
    if not tonumber(w[i + 2]) or (w[i + 3] ~= '-' and not tonumber(w[i + 3])) then return false end
  end
  return true
end

-- Fold the pending list into the hashes, atomically: its entries summed per (key, field), then one
-- HINCRBY (HINCRBYFLOAT when an amount has a decimal point) per field, and a key with a ttl given it
-- when the field is new. Every entry is parsed and checked before anything is written, so an entry
-- this version cannot read (another version's format) is skipped and logged, never aborts the
-- script that folds, nor loses the others. Returns how many entries were folded.
local function fold_counts(pending)
  local entries = redis.call('LRANGE', pending, 0, -1)
  if #entries == 0 then return 0 end
  local sums, order = {}, {}
  for _, entry in ipairs(entries) do
    local w = {}
    for word in string.gmatch(entry, '%S+') do w[#w + 1] = word end
    if not counts_entry_ok(w) then
      redis.log(redis.LOG_WARNING, 'optimum-bridge: a pending count entry skipped: ' .. string.sub(entry, 1, 200))
      w = {}
    end
    for i = 1, #w - 3, 4 do
      local id = w[i] .. ' ' .. w[i + 1]
      local s = sums[id]
      if not s then
        s = {key = w[i], field = w[i + 1], n = 0, float = false, ttl = '-'}
        sums[id], order[#order + 1] = s, s
      end
      s.n = s.n + tonumber(w[i + 2])
      s.float = s.float or string.find(w[i + 2], '.', 1, true) ~= nil
      if w[i + 3] ~= '-' then s.ttl = w[i + 3] end
    end
  end
  redis.call('DEL', pending)
  for _, s in ipairs(order) do
    if s.float then
      redis.call('HINCRBYFLOAT', s.key, s.field, string.format('%.17g', s.n))
    elseif redis.call('HINCRBY', s.key, s.field, string.format('%d', s.n)) == s.n and s.ttl ~= '-' then
      redis.call('EXPIRE', s.key, tonumber(s.ttl))
    end
  end
  return #entries
end

-- Push this script call's counts as one entry: those of count(), and the metrics of an API call given
-- from ARGV[first] on (process.metrics.Metrics.call_counts): the pending list, its bound, then
-- (key, field, amount, ttl) quadruples (ttl '' for none). The list is folded when the push makes it
-- that long, so it stays short without a timer. With no call's metrics (so no list named), what
-- count() holds is added at once.
local function add_counts(first)
  local pending, bound = ARGV[first], tonumber(ARGV[first + 1])
  for i = first + 2, #ARGV - 3, 4 do
    local ttl = ARGV[i + 3] == '' and '-' or ARGV[i + 3]
    counted[#counted + 1] = ARGV[i] .. ' ' .. ARGV[i + 1] .. ' ' .. ARGV[i + 2] .. ' ' .. ttl
  end
  if #counted == 0 then return end
  if not pending then
    for _, entry in ipairs(counted) do
      local key, field, amount = string.match(entry, '^(%S+) (%S+) (%S+)')
      redis.call('HINCRBY', key, field, amount)
    end
  elseif redis.call('RPUSH', pending, table.concat(counted, ' ')) >= bound then
    fold_counts(pending)
  end
  counted = {}
end

-- Make `key` live at least `ttl` more seconds (EXPIRE's GT option needs Redis 7; the demo may run 6.2).
local function extend(key, ttl)
  local left = redis.call('TTL', key)
  if left >= 0 and left < ttl then redis.call('EXPIRE', key, ttl) end
end

local function is_final(status)
  return status == 'succeeded' or status == 'failed' or status == 'cancelled'
end

-- Whether a job's call is under way: its own, or (spec 13) the call of the job it joined.
local function call_running(job_prefix, status, leader)
  if status == 'running' then return true end
  return leader ~= false and leader ~= nil and redis.call('HGET', job_prefix .. leader, FIELD.status) == 'running'
end

-- When a job of a sealed batch became final: finish the batch once, and leave its callback (if it
-- has a URL) to the callbacks watch. Returns 1 when the batch finished now.
local function finish_batch_if_done(batch, finished_at, ttl, watch)
  if not batch then return 0 end
  local b = redis.call('HMGET', batch, 'total', 'n:succeeded', 'n:failed', 'n:cancelled', 'sealed')
  local final = tonumber(b[2] or '0') + tonumber(b[3] or '0') + tonumber(b[4] or '0')
  if b[5] ~= '1' or final < tonumber(b[1] or '0') then return 0 end
  if redis.call('HSETNX', batch, 'finished_at', finished_at) == 0 then return 0 end
  redis.call('EXPIRE', batch, ttl)
  if redis.call('HEXISTS', batch, 'callback') == 1 then
    redis.call('HSET', batch, 'cb', 'pending')
    redis.call('ZADD', watch, now_ms(), 'batch:' .. string.match(batch, '([^:]+)$'))
  end
  return 1
end

-- Move a job to `status`, keeping its batch's counts (``n:<status>``) in step; returns the old status.
local function set_status(job_key, status)
  local current = redis.call('HMGET', job_key, FIELD.status, FIELD.batch)
  local old, batch = current[1], current[2]
  if old == status then return old end
  redis.call('HSET', job_key, FIELD.status, status)
  if batch then
    if old then redis.call('HINCRBY', batch, 'n:' .. old, -1) end
    redis.call('HINCRBY', batch, 'n:' .. status, 1)
  end
  return old
end

-- The lane a job waits in: <lane prefix><account>:<priority>.
local function lane_of(lane_prefix, job_key)
  local f = redis.call('HMGET', job_key, FIELD.account, FIELD.priority, FIELD.seq)
  return lane_prefix .. f[1] .. ':' .. f[2], tonumber(f[3])
end

local RANK = {urgent = 0, normal = 1, bulk = 2}

-- Move a job to `priority`'s lane, keeping its place by submission; a job not in a lane (delayed,
-- handed off, or waiting on another job's call) only takes the new priority, for when it enters one.
local function move_lane(lane_prefix, job_key, jid, priority)
  local old_lane, seq = lane_of(lane_prefix, job_key)
  local waiting = redis.call('ZREM', old_lane, jid)
  redis.call('HSET', job_key, FIELD.priority, priority)
  if waiting == 1 then
    local new_lane = lane_of(lane_prefix, job_key)
    redis.call('ZADD', new_lane, seq, jid)
  end
end

-- The lane a call belongs in is the highest of its own job's priority and those of the jobs waiting
-- on it (spec 13): put job `jid` there, keeping its own in FIELD.own_priority while it is lifted.
-- Run when a job joins, leaves or moves, so a lift never outlives the follower that caused it.
local function relane(lane_prefix, job_prefix, followers_prefix, jid)
  local key = job_prefix .. jid
  local f = redis.call('HMGET', key, FIELD.status, FIELD.priority, FIELD.own_priority)
  if not f[1] or is_final(f[1]) or f[1] == 'running' then return end
  local own = f[3] or f[2]
  local best = own
  for _, fid in ipairs(redis.call('SMEMBERS', followers_prefix .. jid)) do
    local g = redis.call('HMGET', job_prefix .. fid, FIELD.status, FIELD.priority, FIELD.coalesced_with)
    if g[1] and not is_final(g[1]) and g[3] == jid and RANK[g[2]] < RANK[best] then best = g[2] end
  end
  if best ~= f[2] then move_lane(lane_prefix, key, jid, best) end
  if best ~= own then
    redis.call('HSET', key, FIELD.own_priority, own)
  else
    redis.call('HDEL', key, FIELD.own_priority)
  end
end

-- The ready set (keys.ready) holds every account with work in its lanes or delayed set, scored by
-- when (ms) a dispatcher should next look at it; dispatch.lua sets the exact time (its next slot,
-- its first retry) or drops it. Whoever gives an account work says so here, atomically with it.

-- Account `account` has work due at `at` (ms): it enters the ready set, or moves earlier in it (never
-- later: the dispatcher knows better). A dispatcher waiting on the wake list is woken only when this
-- is sooner than anything it waits for already (bounded: the list grows only as the earliest falls).
local function make_ready(ready, wake, account, at)
  local first = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
  redis.call('ZADD', ready, 'LT', at, account)
  if not first[1] or tonumber(first[2]) > at then redis.call('LPUSH', wake, '1') end
end

-- A job was parked in an account's delayed set until `due` (ms): the account's limiter state
-- (keys.limiter_state) says when lua/_serve.lua must next look at that set (`look_delayed`);
-- make it no later (absent: it looks at the next serve anyway). Run by every writer of a delayed set.
local function lower_delayed_hint(state, due)
  local hint = tonumber(redis.call('HGET', state, 'look_delayed') or '')
  if hint and hint > due then redis.call('HSET', state, 'look_delayed', due) end
end

-- How near an account's next slot must be for a thread that takes its job (lua/_serve.lua) to
-- leave it to the next thread that finishes, and for a freed thread to wake a dispatcher for it.
local SOON_MS = 10

-- A worker thread is free again (a job finished, was parked or put back): wake a dispatcher if an
-- account is due (within SOON_MS), since it may be waiting for a thread.
local function wake_if_due(ready, wake, now)
  if redis.call('ZRANGEBYSCORE', ready, '-inf', now + SOON_MS, 'LIMIT', 0, 1)[1] then
    redis.call('LPUSH', wake, '1')
  end
end

-- Whether any of the account's lanes holds a job (then it is in the ready set already).
local function lanes_busy(lane_prefix, account)
  local base = lane_prefix .. account .. ':'
  return redis.call('EXISTS', base .. 'urgent', base .. 'normal', base .. 'bulk') > 0
end
