-- uses: limiter, message, serve
-- Finish a job once, queue its callback in the same step (so there is never a second one), and
-- when it is the last of its batch, finish the batch and queue the batch's callback, once.
-- A read that led a shared call (spec 13) gives its answer to every job that joined it, each
-- finished with its own callback (a follower's batch, when it finishes, is left to the watch),
-- stops being the call new identical reads join, and, when it succeeded, becomes the fresh
-- answer later ones with a max age may take (when it failed, no earlier answer is fresh).
-- Its worker thread is free again: a dispatcher waiting for one is woken (unless kept: ARGV 17).
-- With a hold (ARGV 16), the job's own callback is not queued: its first delivery is made by the
-- worker that finished the job, right after this script; the callbacks watch waits that much longer
-- before it queues the callback again (the worker died before settling it). Nothing else delivers
-- it meanwhile, so no delivery lease is needed.
-- With a new owner (ARGV 17), the worker thread, free again, takes the next job whose slot is free
-- now in the same step (take_next, in _serve.lua: no message, no claim, no wake-up); else a
-- dispatcher waiting for a thread is woken. Either way the job's lease goes, also when the job was
-- already final or gone.
-- KEYS: 1 job hash, 2 leases (zset: job id -> lease deadline), 3 callbacks queue, 4 stats,
--       5 callbacks watch, 6 running (the previous version's: not written, kept so that the keys
--       after it keep their numbers), 7 ready, 8 wake, 9 quotas, 10 dispatched, 11 capacity.
-- ARGV: 1 owner (not read: see the lease below), 2 final status, 3 response JSON, 4 error JSON, 5 finished at, 6 result ttl (s),
--       7 callback message ('' for none), 8 watch ms, 9 job id, 10 batch callback message
--       ('' when the job is in no batch), 11 batch id, 12 job key prefix, 13 followers key prefix,
--       14 callback message template, 15 its body embed, 16 hold ms ('' to queue the callback),
--       17 the new owner ('' to take nothing), 18 its lease ms, 19 sent at (ISO; '' to leave the
--       sent record to mark_sent.lua), 20 the account it applies to (whose token the worker
--       holds), 21 lane prefix, 22 delayed key prefix, 23 limiter key prefix, 24 not read (it was
--       the lease key prefix),
--       25 most due accounts to try, 26... the call's metrics (add_counts), added whatever the
--       job's state.
-- Returns {1 when finished now (0 when it already was, -1 when the job is gone), the job's record as
-- HGETALL would give it when its callback is this caller's to deliver (else {}), the job taken next
-- (take_next; {})}.
-- Every field of the job it needs is read in one HMGET, and written in one HSET.
local now = now_ms()
local deliver = ARGV[7] ~= '' and ARGV[16] ~= ''

-- The fields of the job read at the start, in one HMGET: those finish() needs, and when its callback
-- is held for the caller, every field of the job (it returns the record as it stands once finished,
-- with no HGETALL after the writes: issue 17).
local NEEDED = {FIELD.status, FIELD.batch, FIELD.read, FIELD.started_at, FIELD.alone}
local names = NEEDED
if deliver then
  names = {}
  for _, name in ipairs(NEEDED) do names[#names + 1] = name end
  for _, name in pairs(FIELD) do
    if name ~= FIELD.status and name ~= FIELD.batch and name ~= FIELD.read and name ~= FIELD.started_at
       and name ~= FIELD.alone then
      names[#names + 1] = name
    end
  end
end

-- The job's record once finished: the fields read, with those finish() wrote over them (`written`,
-- a flat list of names and values), as HGETALL would give it.
local function record(values, written)
  local by_name = {}
  for i, name in ipairs(names) do by_name[name] = values[i] end
  for i = 1, #written, 2 do by_name[written[i]] = written[i + 1] end
  local flat = {}
  for name, value in pairs(by_name) do
    if value then
      flat[#flat + 1] = name
      flat[#flat + 1] = value
    end
  end
  return flat
end

-- Finish the job; returns 1, 0 (already final) or -1 (gone), and its record when its callback is
-- held for the caller (else nil).
local function finish()
  local f = redis.call('HMGET', KEYS[1], unpack(names))
  local status, batch, read, started, alone = f[1], f[2], f[3], f[4], f[5] == '1'
  if not status then return -1, nil end
  if is_final(status) then return 0, nil end
  if batch then  -- set_status, with the fields read above
    redis.call('HINCRBY', batch, 'n:' .. status, -1)
    redis.call('HINCRBY', batch, 'n:' .. ARGV[2], 1)
  end
  local written = {FIELD.status, ARGV[2], FIELD.response, ARGV[3], FIELD.error, ARGV[4], FIELD.finished_at, ARGV[5],
                   FIELD.inflight, '0'}
  if ARGV[7] ~= '' then
    written[#written + 1] = FIELD.cb
    written[#written + 1] = 'pending'
  end
  redis.call('HSET', KEYS[1], unpack(written))
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
  count(KEYS[4], 'jobs:' .. ARGV[2], 1)
  if deliver then
    redis.call('ZADD', KEYS[5], now + tonumber(ARGV[16]) + tonumber(ARGV[8]), ARGV[9])
  elseif ARGV[7] ~= '' then
    redis.call('LPUSH', KEYS[3], ARGV[7])
    redis.call('ZADD', KEYS[5], now + tonumber(ARGV[8]), ARGV[9])
  end
  if read then
    -- A read marked alone was never the call identical reads join (submit.lua): nothing to undo.
    if not alone and redis.call('GET', read) == ARGV[9] then redis.call('DEL', read) end
    if ARGV[2] == 'succeeded' then  -- fresh for max_age_s (at most a day), while its record lasts
      redis.call('SET', read .. ':fresh', ARGV[9] .. ':' .. now, 'EX', math.min(tonumber(ARGV[6]), 86400))
    else  -- a newer identical read failed: the older answer is no longer one to hand out
      redis.call('DEL', read .. ':fresh')
    end
  end
  -- Only a read (it has a read key) not marked alone leads a call others joined; `started` is when
  -- that call was sent.
  local followers = ARGV[13] .. ARGV[9]
  local members = read and not alone and redis.call('SMEMBERS', followers) or {}
  for _, fid in ipairs(members) do
    local fkey = ARGV[12] .. fid
    local g = redis.call('HMGET', fkey, FIELD.status, FIELD.coalesced_with, FIELD.op, FIELD.batch)
    if g[1] and not is_final(g[1]) and g[2] == ARGV[9] then
      set_status(fkey, ARGV[2])
      redis.call('HSET', fkey, FIELD.response, ARGV[3], FIELD.error, ARGV[4], FIELD.finished_at, ARGV[5],
                 FIELD.inflight, '0')
      if started then redis.call('HSET', fkey, FIELD.started_at, started) end
      redis.call('EXPIRE', fkey, tonumber(ARGV[6]))
      count(KEYS[4], 'jobs:' .. ARGV[2], 1)
      if has_callback(g[3]) then
        redis.call('HSET', fkey, FIELD.cb, 'pending')
        redis.call('LPUSH', KEYS[3], callback_message(ARGV[14], ARGV[15], fid, 1))
        redis.call('ZADD', KEYS[5], now + tonumber(ARGV[8]), fid)
      end
      finish_batch_if_done(g[4], ARGV[5], tonumber(ARGV[6]), KEYS[5])
    end
  end
  if #members > 0 then redis.call('DEL', followers) end
  if batch and ARGV[10] ~= '' then
    local finished = finish_batch_if_done(batch, ARGV[5], tonumber(ARGV[6]), KEYS[5])
    if finished == 1 and redis.call('HEXISTS', batch, 'callback') == 1 then
      -- The batch finished with this job: queue its callback now (the watch would, a little later).
      redis.call('LPUSH', KEYS[3], ARGV[10])
      redis.call('ZADD', KEYS[5], now + tonumber(ARGV[8]), 'batch:' .. ARGV[11])
    end
  end
  return 1, deliver and record(f, written) or nil
end

local outcome, held = finish()
-- The job is final (now or before): no one takes a lease on it any more, so its lease goes without
-- an owner check (one who took it over after ours ran out has nothing left to do with it either).
redis.call('ZREM', KEYS[2], ARGV[9])
add_counts(26)  -- the call's metrics and the jobs finished above, pushed as one entry
local taken = {}
if ARGV[17] ~= '' then
  local S = {
    now = now, job_prefix = ARGV[12], lane_prefix = ARGV[21], delayed_prefix = ARGV[22],
    limiter_prefix = ARGV[23], ready = KEYS[7], wake = KEYS[8], quotas = KEYS[9], dispatched = KEYS[10],
    leases = KEYS[2], capacity = KEYS[11], most = 1, owner = ARGV[17],
    lease_ms = tonumber(ARGV[18]),
  }
  taken = take_next(S, ARGV[20], ARGV[19], tonumber(ARGV[25]))
else
  wake_if_due(KEYS[7], KEYS[8], now)
end
return {outcome, held or {}, taken}
