-- Record a delivery's outcome, schedule the next attempt or file the dead letter, release the lease.
-- KEYS: job hash, delivery lease, stats, due set, dead letters, callbacks watch.
-- ARGV: owner, outcome (delivered|dead|retry|later|queue), due member (queue key, a newline, the
--       message), delay ms, job id, dead letter JSON, watch ms, next attempt.
-- 'queue' puts the message on its queue at once (a first delivery made by the worker that finished
-- the job, which did not get an answer in time, goes to the delivery path with its full timeout).
local outcome = ARGV[2]
if outcome == 'delivered' then
  redis.call('HSET', KEYS[1], FIELD.cb, 'delivered')
  redis.call('HINCRBY', KEYS[3], 'callbacks:delivered', 1)
  redis.call('ZREM', KEYS[6], ARGV[5])
elseif outcome == 'dead' then
  redis.call('HSET', KEYS[1], FIELD.cb, 'dead')
  redis.call('HSET', KEYS[5], ARGV[5], ARGV[6])
  redis.call('HINCRBY', KEYS[3], 'callbacks:failed', 1)
  redis.call('HINCRBY', KEYS[3], 'callbacks:dead', 1)
  redis.call('ZREM', KEYS[6], ARGV[5])
elseif outcome == 'queue' then
  redis.call('HSET', KEYS[1], FIELD.cb_attempt, ARGV[8])
  local sep = string.find(ARGV[3], '\n', 1, true)
  redis.call('LPUSH', string.sub(ARGV[3], 1, sep - 1), string.sub(ARGV[3], sep + 1))
  redis.call('ZADD', KEYS[6], now_ms() + tonumber(ARGV[7]), ARGV[5])
else
  if outcome == 'retry' then redis.call('HINCRBY', KEYS[3], 'callbacks:failed', 1) end
  redis.call('HSET', KEYS[1], FIELD.cb_attempt, ARGV[8])
  local now = now_ms()
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[4]), ARGV[3])
  redis.call('ZADD', KEYS[6], now + tonumber(ARGV[4]) + tonumber(ARGV[7]), ARGV[5])
end
if ARGV[1] ~= '' then release_if_owner(KEYS[2], ARGV[1]) end  -- '': held by no lease
return 1
