-- Seal a batch once all its jobs are submitted: its total becomes the jobs it created (a repeated
-- idempotency key gives an existing job, which is not the batch's). If they are all final by
-- now, the batch finishes here, and its callback is left to the callbacks watch to queue.
-- KEYS: 1 batch hash, 2 callbacks watch.  ARGV: 1 jobs created, 2 finished at, 3 result ttl (s),
--       4 batch id.  Returns 1 when the batch finished now.
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'sealed', 1)
local b = redis.call('HMGET', KEYS[1], 'n:succeeded', 'n:failed', 'n:cancelled')
local final = tonumber(b[1] or '0') + tonumber(b[2] or '0') + tonumber(b[3] or '0')
if final < tonumber(ARGV[1]) or redis.call('HSETNX', KEYS[1], 'finished_at', ARGV[2]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
if redis.call('HEXISTS', KEYS[1], 'callback') == 1 then
  redis.call('HSET', KEYS[1], 'cb', 'pending')
  redis.call('ZADD', KEYS[2], now_ms(), 'batch:' .. ARGV[4])
end
return 1
