-- The quota, shared by the scripts that give slots (dispatch, take_slot) and the forecast.
-- A slot may start at `now` when (1) no pause is in force, (2) fewer than `limit` starts lie in
-- the last `window` ms (the sliding log: exact, never more than `limit` in any window), and (3)
-- the pacer allows it: starts come one every `interval` ms, with up to `tau` ms of burst credit
-- (GCRA; tau = 0 gives evenly spaced slots under a backlog).

-- When the next slot may start (ms, Redis clock), given the log, the pause and the pacer.
local function next_slot(log, pause_key, tat_key, now, limit, window, interval, tau)
  redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
  local at = now
  local pause = tonumber(redis.call('GET', pause_key) or '0')
  if pause > at then at = pause end
  local tat = tonumber(redis.call('GET', tat_key) or '0')
  if tat - tau > at then at = tat - tau end
  local n = redis.call('ZCARD', log)
  if n >= limit then
    local nth = redis.call('ZRANGE', log, n - limit, n - limit, 'WITHSCORES')
    local wall = tonumber(nth[2]) + window
    if wall > at then at = wall end
  end
  return at
end

-- Record a start at `now` under `member`, and move the pacer on.
local function take(log, tat_key, now, member, window, interval)
  redis.call('ZADD', log, now, member)
  redis.call('PEXPIRE', log, window + 1000)
  local tat = tonumber(redis.call('GET', tat_key) or '0')
  if tat < now then tat = now end
  redis.call('SET', tat_key, tat + interval, 'PX', window + interval + 1000)
end
