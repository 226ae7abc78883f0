-- uses: limiter
-- A worker takes a dispatched job: its lease and the running state, unless the message is stale.
-- A message taken well after its slot (over LATE_MS: it waited in a queue, or its worker stalled)
-- has its start counted where it really is, if the quota's window allows, else the job goes back
-- to its lane. A start a little late is left to mark_sent.lua, which counts every start right
-- before its call leaves: checking it here too cost four commands a call for nothing.
-- KEYS: 1 job hash, 2 job lease, 3 dispatched, 4 running, 5 limiter log, 6 learned limits, 7 ready,
--       8 wake.
-- ARGV: 1 owner, 2 lease ms, 3 dispatch id, 4 window ms, 5 limit, 6 lane prefix, 7 job id, 8 account.
-- Returns {'ok', inflight, attempts, op, submitted_at, batch} | {'missing'} | {'final'} |
-- {'stale'} (not this job's current dispatch) | {'late'} (its slot went by: back in its lane) |
-- {'leased', pttl}.
local LATE_MS = 1000
local f = redis.call('HMGET', KEYS[1], FIELD.status, FIELD.dispatch, FIELD.dispatched_at, FIELD.batch,
                     FIELD.inflight, FIELD.attempts, FIELD.op, FIELD.submitted_at)
local status, batch = f[1], f[4]
if not status then return {'missing'} end
if is_final(status) then return {'final'} end
local jid = ARGV[7]
if f[2] ~= ARGV[3] or not redis.call('ZSCORE', KEYS[3], jid) then return {'stale'} end
local now = now_ms()
if now > tonumber(f[3]) + LATE_MS then
  local member = jid .. '.' .. ARGV[3]
  local window = tonumber(ARGV[4])
  local limit = learned_limit(KEYS[6], now, tonumber(ARGV[5]), window)
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
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then
  return {'leased', redis.call('PTTL', KEYS[2])}
end
redis.call('ZREM', KEYS[3], jid)
redis.call('ZADD', KEYS[4], now, jid)
if status ~= 'running' then  -- set_status, with the fields read above
  redis.call('HSET', KEYS[1], FIELD.status, 'running')
  if batch then
    redis.call('HINCRBY', batch, 'n:' .. status, -1)
    redis.call('HINCRBY', batch, 'n:running', 1)
  end
end
return {'ok', f[5] or '0', tonumber(f[6]), f[7], f[8], batch or ''}
