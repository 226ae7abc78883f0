-- uses: limiter, message
-- Give free quota slots of one account to its best waiting jobs, now, and hand each to a worker.
-- The best job is the oldest (lowest sequence) of the highest lane present. A job is given a
-- slot only when a call may start now, and only while the workers have a free thread for it.
-- KEYS: 1 urgent lane, 2 normal lane, 3 bulk lane (zsets: seq -> job id), 4 delayed (zset:
--       due ms -> job id), 5 limiter log, 6 pause, 7 pacer TAT, 8 dispatched (zset: job id ->
--       hand-off deadline), 9 running (zset), 10 capacity (string: free threads of live
--       workers), 11 operations queue, 12 learned limits.
-- ARGV: 1 job key prefix, 2 limit, 3 window ms, 4 interval ms, 5 burst credit ms,
--       6 hand-off ms, 7 message template, 8 body embed JSON, 9 most slots to give, 10 lane prefix,
--       11 account.
-- Returns {outcome, dispatched, wait ms}: 'idle' (nothing waits), 'wait' (the next slot is
-- `wait ms` away), 'busy' (no free thread), 'more' (the batch limit was reached).
local job_prefix, limit, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local interval, tau, handoff = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local template, embed, most, lane_prefix, account = ARGV[7], ARGV[8], tonumber(ARGV[9]), ARGV[10], ARGV[11]
local now = now_ms()

-- Retries and deferrals that are due go back to their lane, keeping their age.
for _, jid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 200)) do
  redis.call('ZREM', KEYS[4], jid)
  local key = job_prefix .. jid
  local status = redis.call('HGET', key, FIELD.status)
  if status == 'queued' or status == 'retrying' then
    local lane, seq = lane_of(lane_prefix, key)
    redis.call('ZADD', lane, seq, jid)
  end
end

local given = 0
while given < most do
  local lane, best = nil, nil
  for i = 1, 3 do
    local head = redis.call('ZRANGE', KEYS[i], 0, 0)
    if head[1] then lane, best = KEYS[i], head[1]; break end
  end
  if not best then return {'idle', given, 0} end
  local at, _, spacing = next_slot(KEYS[5], KEYS[6], KEYS[7], KEYS[12], now, limit, window, interval, tau)
  if at > now then return {'wait', given, at - now} end
  local capacity = tonumber(redis.call('GET', KEYS[10]) or '-1')
  if capacity >= 0 and redis.call('ZCARD', KEYS[8]) + redis.call('ZCARD', KEYS[9]) >= capacity then
    return {'busy', given, 0}
  end
  local key = job_prefix .. best
  redis.call('ZREM', lane, best)
  local status = redis.call('HGET', key, FIELD.status)
  if status == 'queued' or status == 'retrying' then
    local dispatch = redis.call('HINCRBY', key, FIELD.dispatch, 1)
    take(KEYS[5], KEYS[7], now, best .. '.' .. dispatch, window, spacing)
    redis.call('HSET', key, FIELD.dispatched_at, now)
    redis.call('ZADD', KEYS[8], now + handoff, best)
    redis.call('LPUSH', KEYS[11], job_message(template, embed, best, dispatch, account))
    given = given + 1
  end
end
return {'more', given, 0}
