-- uses: limiter
-- A worker takes a dispatched job: its lease and the running state, unless the message is stale.
-- A message taken well after its slot (over LATE_MS: it waited in a queue, or its worker stalled)
-- has its start counted where it really is, if the quota's window allows, else the job goes back
-- to its lane. A start a little late is left to mark_sent.lua, which counts every start right
-- before its call leaves: checking it here too cost four commands a call for nothing.
-- With a sent-at time (ARGV 9: the worker has its token and calls right after), it also does what
-- mark_sent.lua does, in the same step, unless an earlier attempt may be in flight (the worker
-- decides about those): the start counted now if the window allows, the attempt counted.
-- KEYS: 1 job hash, 2 leases (zset: job id -> lease deadline; the owner goes in the job hash),
--       3 dispatched, 4 running (the previous version's: not written, kept so that the keys after it
--       keep their numbers), 5 limiter log, 6 the account's limiter state (its learned limits), 7 ready,
--       8 wake.
-- ARGV: 1 owner, 2 lease ms, 3 dispatch id, 4 window ms, 5 limit, 6 lane prefix, 7 job id, 8 account,
--       9 sent at (ISO; '' to leave it to mark_sent.lua).
-- Returns {'ok', inflight, attempts, op, submitted_at, batch, sent} | {'missing'} | {'final'} |
-- {'stale'} (not this job's current dispatch) | {'late'} (its slot went by: back in its lane) |
-- {'leased', ms left of another's lease}; sent is the attempt number when counted as sent here, 0
-- when the window has no room now (nothing sent: the worker gives the slot back), -1 when not asked
-- or in flight.
local LATE_MS = 1000
local f = redis.call('HMGET', KEYS[1], FIELD.status, FIELD.dispatch, FIELD.dispatched_at, FIELD.batch,
                     FIELD.inflight, FIELD.attempts, FIELD.op, FIELD.submitted_at)
local status, batch = f[1], f[4]
if not status then return {'missing'} end
if is_final(status) then return {'final'} end
local jid = ARGV[7]
if f[2] ~= ARGV[3] or not redis.call('ZSCORE', KEYS[3], jid) then return {'stale'} end
local now = now_ms()
local member = jid .. '.' .. ARGV[3]
local window = tonumber(ARGV[4])
local limit = nil
if now > tonumber(f[3]) + LATE_MS then
  limit = learned_limit(KEYS[6], now, tonumber(ARGV[5]), window)
  local own = tonumber(redis.call('ZSCORE', KEYS[5], member) or '0')
  local starts = redis.call('ZCOUNT', KEYS[5], '(' .. (now - window), '+inf')
  if own <= now - window then starts = starts + 1 end
  if starts > limit then
    redis.call('ZREM', KEYS[5], member)
    redis.call('ZREM', KEYS[3], jid)
    local lane, seq = lane_of(ARGV[6], KEYS[1])
    redis.call('ZADD', lane, seq, jid)
    make_ready(KEYS[7], KEYS[8], ARGV[8], now)
    wake_if_due(KEYS[7], KEYS[8], now)
    return {'late'}
  end
  redis.call('ZADD', KEYS[5], now, member)
end
local leased, deadline = take_lease(KEYS[2], jid, now, tonumber(ARGV[2]))
if not leased then return {'leased', deadline - now} end
redis.call('ZREM', KEYS[3], jid)
local fields = {FIELD.owner, ARGV[1]}  -- written in one HSET at the end
if status ~= 'running' then  -- set_status, with the fields read above
  table.insert(fields, FIELD.status)
  table.insert(fields, 'running')
  if batch then
    redis.call('HINCRBY', batch, 'n:' .. status, -1)
    redis.call('HINCRBY', batch, 'n:running', 1)
  end
end
local sent = -1
if ARGV[9] ~= '' and f[5] ~= '1' then  -- mark_sent.lua's step: the call leaves right after this
  sent = 0
  local own = tonumber(redis.call('ZSCORE', KEYS[5], member) or '0')
  if own < now then  -- not counted at its late claim above
    limit = limit or learned_limit(KEYS[6], now, tonumber(ARGV[5]), window)
    local starts = redis.call('ZCOUNT', KEYS[5], '(' .. (now - window), '+inf')
    if own <= now - window then starts = starts + 1 end
    if starts > limit then
      redis.call('ZREM', KEYS[5], member)
    else
      redis.call('ZADD', KEYS[5], now, member)
      own = now
    end
  end
  if own >= now then
    sent = redis.call('HINCRBY', KEYS[1], FIELD.attempts, 1)
    table.insert(fields, FIELD.inflight)
    table.insert(fields, '1')
    table.insert(fields, FIELD.started_at)
    table.insert(fields, ARGV[9])
  end
end
redis.call('HSET', KEYS[1], unpack(fields))
return {'ok', f[5] or '0', tonumber(f[6]), f[7], f[8], batch or '', sent}
