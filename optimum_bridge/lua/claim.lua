-- uses: limiter
-- A worker takes a dispatched job: its lease and the running state, unless the message is stale.
-- KEYS: 1 job hash, 2 job lease, 3 dispatched, 4 running, 5 limiter log, 6 learned limits, 7 ready,
--       8 wake.
-- ARGV: 1 owner, 2 lease ms, 3 dispatch id, 4 window ms, 5 limit, 6 lane prefix, 7 job id, 8 account.
-- Returns {'ok', inflight, attempts, op, submitted_at, batch} | {'missing'} | {'final'} |
-- {'stale'} (not this job's current dispatch) | {'late'} (its slot went by: back in its lane) |
-- {'leased', pttl}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local f = redis.call('HMGET', KEYS[1], FIELD.status, FIELD.dispatch, FIELD.dispatched_at)
if is_final(f[1]) then return {'final'} end
local jid = ARGV[7]
if f[2] ~= ARGV[3] or not redis.call('ZSCORE', KEYS[3], jid) then return {'stale'} end
local now = now_ms()
local member = jid .. '.' .. ARGV[3]
local window = tonumber(ARGV[4])
local limit = learned_limit(KEYS[6], now, tonumber(ARGV[5]), window)
if now > tonumber(f[3]) then
  -- The call starts later than its slot: count it where it really starts, if the quota allows.
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
set_status(KEYS[1], 'running')
local g = redis.call('HMGET', KEYS[1], FIELD.inflight, FIELD.attempts, FIELD.op, FIELD.submitted_at, FIELD.batch)
return {'ok', g[1] or '0', tonumber(g[2]), g[3], g[4], g[5] or ''}
