-- Serving an account: its free quota slots go to its best waiting jobs, now (needs limiter and
-- message). Shared by dispatch.lua (a dispatcher hands each job to a worker as a Celery message)
-- and complete.lua (a worker thread whose job just finished takes the next one itself: take_next;
-- no message, no claim, no wake-up; issue 17).
-- S, the context: now; job_prefix, lane_prefix, delayed_prefix, limiter_prefix; the keys ready,
-- wake, quotas (hash: account -> 'limit window interval burst', ms; read only for an account whose
-- limiter state holds no copy: quota_of), dispatched (zset: job id -> hand-off deadline), leases
-- (zset: job id -> lease deadline), capacity (string: free threads of live workers); most (slots
-- per account and call); free (nil until read: threads free for new hand-offs, -1 when unknown).
-- To hand off: queue, handoff (ms), template, embed. To take (S.owner set): owner, lease_ms,
-- sent_at ('' to leave the sent record to mark_sent.lua), and S.taken is set to what was taken:
-- {job id, dispatch, account, inflight, attempts, op, submitted_at, batch, sent}.

-- Threads free for new hand-offs; read once, when first needed (-1: no limit known).
local function free_threads(S)
  if S.free == nil then
    local capacity = tonumber(redis.call('GET', S.capacity) or '-1')
    if capacity < 0 then
      S.free = -1
    else
      -- A previous version's worker (its jobs in keys.running) is not counted: during a rolling
      -- upgrade, hand-offs may outpace its busy threads (their messages wait, or come back stale).
      S.free = math.max(0, capacity - redis.call('ZCARD', S.dispatched) - redis.call('ZCARD', S.leases))
    end
  end
  return S.free
end

-- Job `jid` (waiting: `f` is its HMGET of status, dispatch, inflight, attempts, op, submitted_at,
-- batch) runs now in the calling thread: its lease, the running state, the start counted already
-- (`take` in serve), and the attempt counted as sent when S.sent_at says the call leaves right
-- after (claim.lua's rules: not when an earlier attempt may be in flight). False when another
-- holder's lease is still on it (the job goes back to its lane's head).
local function take_job(S, account, key, jid, dispatch, f)
  if not take_lease(S.leases, jid, S.now, S.lease_ms) then return false end
  local fields = {FIELD.status, 'running', FIELD.dispatch, dispatch, FIELD.dispatched_at, S.now,
                  FIELD.owner, S.owner}
  if f[7] then
    redis.call('HINCRBY', f[7], 'n:' .. f[1], -1)
    redis.call('HINCRBY', f[7], 'n:running', 1)
  end
  local attempts = tonumber(f[4] or '0')
  local sent = -1
  if S.sent_at ~= '' and f[3] ~= '1' then
    sent = attempts + 1
    for _, v in ipairs({FIELD.attempts, sent, FIELD.inflight, '1', FIELD.started_at, S.sent_at}) do
      table.insert(fields, v)
    end
  end
  redis.call('HSET', key, unpack(fields))
  S.taken = {jid, dispatch, account, f[3] or '0', attempts, f[5], f[6], f[7] or '', sent}
  return true
end

-- Redis 7's ZMPOP pops the head of the first lane that is not empty, in one command (issue 17: it
-- replaces a ZRANGE per lane looked at and a ZREM); Redis 6.2 has none, and gets those instead.
local HAS_ZMPOP = (redis.REDIS_VERSION_NUM or 0) >= 0x070000

-- Take the best waiting job out of `lanes` (from index `from` on): the oldest (lowest sequence) of
-- the highest lane present. Returns its lane, id, sequence and lane index, or nil when all are empty.
local function pop_best(lanes, from)
  if HAS_ZMPOP then
    local args = {'ZMPOP', 4 - from}
    for n = from, 3 do table.insert(args, lanes[n]) end
    table.insert(args, 'MIN')
    local popped = redis.call(unpack(args))
    if not popped then return nil end
    local n = from
    while lanes[n] ~= popped[1] do
      n = n + 1
      if n > 3 then error('ZMPOP answered a key it was not given: ' .. tostring(popped[1])) end
    end
    return popped[1], popped[2][1][1], tonumber(popped[2][1][2]), n
  end
  for n = from, 3 do
    local head = redis.call('ZRANGE', lanes[n], 0, 0, 'WITHSCORES')
    if head[1] then
      redis.call('ZREM', lanes[n], head[1])
      return lanes[n], head[1], tonumber(head[2]), n
    end
  end
  return nil
end

-- How far ahead (ms) a look at an account's delayed set may tell that nothing of it is due
-- (`look_delayed`, below). Every script of this version that parks a job there makes the hint no
-- later than the job's time (lower_delayed_hint, in _prelude.lua); one of the previous version
-- does not (a producer's submit.lua with a not_before, a worker's retry): its job goes to its lane
-- at most this late when the account has other work waiting, and on time when it has none (idle()).
local DELAYED_LOOK_MS = 1000

-- The account's quota ('limit window interval burst') from its state `st` (one HMGET with the rest);
-- an account published by a previous version has it only in the quotas hash: it is read there and
-- copied into the state by the caller's next write (`writes`), once. Nil: no quota is stored.
local function quota_of(S, account, st, writes)
  local quota = st[S_QUOTA]
  if not quota then
    quota = redis.call('HGET', S.quotas, account)
    if not quota then return nil end
    st[S_QUOTA] = quota
    table.insert(writes, 'quota')
    table.insert(writes, quota)
  end
  local l, w, i, b = string.match(quota, '^(%S+) (%S+) (%S+) (%S+)$')
  return tonumber(l), tonumber(w), tonumber(i), tonumber(b)
end

-- Retries and deferrals that are due go back to their lane, keeping their age (at most 200 per
-- look). Returns when the next look is needed: the first job not yet due, if within
-- DELAYED_LOOK_MS, else now + DELAYED_LOOK_MS (now when 200 were due: more may be).
-- One command whether or not any is due (the jobs due soon come with their times).
local function promote_due(S, delayed, now)
  local found = redis.call('ZRANGEBYSCORE', delayed, '-inf', now + DELAYED_LOOK_MS, 'WITHSCORES', 'LIMIT', 0, 200)
  for i = 1, #found, 2 do
    local jid, at = found[i], tonumber(found[i + 1])
    if at > now then return at end
    redis.call('ZREM', delayed, jid)
    local key = S.job_prefix .. jid
    local status = redis.call('HGET', key, FIELD.status)
    if status == 'queued' or status == 'retrying' then
      local lane, seq = lane_of(S.lane_prefix, key)
      redis.call('ZADD', lane, seq, jid)
    end
  end
  if #found >= 400 then return now end
  return now + DELAYED_LOOK_MS
end

-- Serve one account: returns its outcome and how many slots it gave. Each account served gets its
-- exact next time in the ready set (its next slot, or its first delayed job), or leaves it when
-- nothing of it waits. A job is given a slot only when a call may start now, and only while the
-- workers have a free thread for it (a taking thread is one). The slot is looked at before the
-- lanes: a job is taken out of its lane only when it gets the slot, so an account whose lanes are
-- empty may keep its time in the ready set until then (whoever looks at that time drops it).
-- Its limiter state (quota, pause, pacer, learned limits, the delayed hint) is read in one HMGET
-- (issue 17); what serving changes in it is written with the start (take), else in one HSET.
local function serve_state(account, S, state, st, writes, looked)
  local limit, window, interval, tau = quota_of(S, account, st, writes)
  if not limit then return 'unknown', 0 end
  local now = S.now
  local base = S.lane_prefix .. account .. ':'
  local lanes = {base .. 'urgent', base .. 'normal', base .. 'bulk'}
  local delayed = S.delayed_prefix .. account
  local log = S.limiter_prefix .. account .. ':log'

  -- The delayed set is looked at only when something in it may be due (`look_delayed` absent or
  -- passed); the next time to look is written with the state.
  local function look()
    looked = true
    table.insert(writes, 'look_delayed')
    table.insert(writes, promote_due(S, delayed, now))
  end
  local hint = tonumber(st[S_LOOK])
  if not looked and (not hint or hint <= now) then look() end

  -- Nothing waits in the lanes: the account is due again at its first delayed job, or leaves the set.
  -- A job due now that the hint hid (parked by a previous version, which does not lower it) goes to
  -- its lane now, and the account is served again (once: it has been looked at).
  local function idle(given)
    local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
    if first[1] and not looked and tonumber(first[2]) <= now then
      look()
      local outcome, more = serve_state(account, S, state, st, writes, true)
      return outcome, given + more
    end
    if first[1] then
      redis.call('ZADD', S.ready, first[2], account)
    else
      redis.call('ZREM', S.ready, account)
    end
    return 'idle', given
  end

  -- A start: recorded in the log, and the pacer moved on with whatever else the state is owed, in
  -- one HSET (take); the TAT is kept for the next slot of this call.
  local function started(member, spacing, tat_ms)
    st[S_TAT] = take(log, state, now, member, spacing, tat_ms, writes)
    for i = #writes, 1, -1 do writes[i] = nil end
  end

  local given, from = 0, 1  -- lanes above the one a job was taken from stay empty within this call
  while true do
    -- No thread for another (a taking thread is its own): stays due, a finished job wakes a dispatcher.
    if not S.owner and (given > 0 and S.free == 0 or free_threads(S) == 0) then
      redis.call('ZADD', S.ready, 'LT', now, account)
      return 'busy', given
    end
    local at, lim, spacing, tat_ms, burst, paused, n, f_learned = next_slot(log, st, now, limit, window, interval, tau)
    if at > now then
      -- A dispatcher keeps the ready set exact (one EXISTS, off the taking path): an account whose
      -- lanes are empty leaves it now rather than at its next slot.
      if not S.owner and not lanes_busy(S.lane_prefix, account) then return idle(given) end
      redis.call('ZADD', S.ready, at, account)
      if S.owner and given > 0 and at <= now + SOON_MS then return 'soon', given end
      return 'wait', given
    end
    if given >= S.most then
      redis.call('ZADD', S.ready, now, account)
      return 'more', given
    end
    local lane, best, seq, index = pop_best(lanes, from)
    if not best then return idle(given) end
    from = index
    local key = S.job_prefix .. best
    local f = redis.call('HMGET', key, FIELD.status, FIELD.dispatch, FIELD.inflight, FIELD.attempts, FIELD.op,
                         FIELD.submitted_at, FIELD.batch)
    if f[1] == 'queued' or f[1] == 'retrying' then
      local dispatch = tonumber(f[2] or '0') + 1
      if S.owner then
        if not take_job(S, account, key, best, dispatch, f) then
          redis.call('ZADD', lane, seq, best)
          redis.call('ZADD', S.ready, 'LT', now, account)
          return 'leased', given
        end
      else
        redis.call('HSET', key, FIELD.dispatch, dispatch, FIELD.dispatched_at, now)
        redis.call('ZADD', S.dispatched, now + S.handoff, best)
        redis.call('LPUSH', S.queue, job_message(S.template, S.embed, best, dispatch, account))
      end
      started(best .. '.' .. dispatch, spacing, tat_ms)
      given = given + 1
      if not S.owner and S.free > 0 then S.free = S.free - 1 end
      -- A taking thread sets its account's next time from what it read (its lanes may be empty
      -- now: whoever looks at that time drops it), not by another look, when that is enough.
      local after = S.owner and next_after_take(now, lim, spacing, tat_ms, burst, paused, n, f_learned)
      if after then
        redis.call('ZADD', S.ready, after, account)
        return after <= now + SOON_MS and 'soon' or 'wait', given
      end
    end
  end
end

-- Serve one account (serve_state), its limiter state read once and what is owed to it written once.
local function serve(account, S)
  local state = S.limiter_prefix .. account .. ':state'
  local writes = {}  -- field, value pairs of the state not yet written (none when a start was taken)
  local outcome, given = serve_state(account, S, state, state_fields(state), writes)
  if #writes > 0 then redis.call('HSET', state, unpack(writes)) end
  return outcome, given
end

-- A worker thread is free: it takes the next job itself when one of the first `most_accounts` due
-- accounts has a slot free now (the earliest due first), counted as sent when that account is
-- `token_account` (sent_at: '' to leave it to mark_sent.lua). A dispatcher is woken when nothing
-- was taken and an account is due within SOON_MS (this thread is free for it), and when an
-- account served here is now the earliest in the ready set (it may wait for a time earlier than
-- the dispatcher's). Returns S.taken, or {} when nothing was taken.
local function take_next(S, token_account, sent_at, most_accounts)
  local moved = {}  -- accounts this call gave a later time
  for _, account in ipairs(redis.call('ZRANGEBYSCORE', S.ready, '-inf', S.now, 'LIMIT', 0, most_accounts)) do
    S.sent_at = account == token_account and sent_at or ''
    local outcome = serve(account, S)
    if outcome == 'wait' then moved[account] = true end
    if S.taken then
      -- The account's next slot, if later than SOON_MS, is a dispatcher's to hand off: it may wait
      -- for a later time. One sooner (or now) is left to the next thread that finishes, or to a
      -- dispatcher if a thread is free: whatever frees one without taking a job wakes one
      -- (wake_if_due looks SOON_MS ahead), and a dispatcher serves every free thread.
      if outcome == 'wait' and redis.call('ZRANGE', S.ready, 0, 0)[1] == account then
        redis.call('LPUSH', S.wake, '1')
      end
      return S.taken
    end
  end
  local first = redis.call('ZRANGE', S.ready, 0, 0, 'WITHSCORES')
  if first[1] and (tonumber(first[2]) <= S.now + SOON_MS or moved[first[1]]) then redis.call('LPUSH', S.wake, '1') end
  return {}
end
