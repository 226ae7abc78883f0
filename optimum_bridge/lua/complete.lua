-- Finish a job once, and queue its callback in the same step (so there is never a second one).
-- KEYS: job hash, job lease, callbacks queue, stats hash, callbacks watch (zset).
-- ARGV: owner, final status, response JSON, error JSON, finished at, result ttl (s),
--       callback message ('' for none), watch ms, job id.
-- Returns 1 when finished now, 0 when it already was, -1 when the job is gone.
local status = redis.call('HGET', KEYS[1], FIELD.status)
if not status then return -1 end
if is_final(status) then return 0 end
redis.call('HSET', KEYS[1], FIELD.status, ARGV[2], FIELD.response, ARGV[3], FIELD.error, ARGV[4],
           FIELD.finished_at, ARGV[5], FIELD.inflight, '0')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
release_if_owner(KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[4], 'jobs:' .. ARGV[2], 1)
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], FIELD.cb, 'pending')
  redis.call('LPUSH', KEYS[3], ARGV[7])
  redis.call('ZADD', KEYS[5], now_ms() + tonumber(ARGV[8]), ARGV[9])
end
return 1
