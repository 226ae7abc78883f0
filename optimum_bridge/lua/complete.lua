-- Finish a job once, queue its callback in the same step (so there is never a second one), and
-- when it is the last of its batch, finish the batch and queue the batch's callback, once.
-- KEYS: 1 job hash, 2 job lease, 3 callbacks queue, 4 stats, 5 callbacks watch, 6 running.
-- ARGV: 1 owner, 2 final status, 3 response JSON, 4 error JSON, 5 finished at, 6 result ttl (s),
--       7 callback message ('' for none), 8 watch ms, 9 job id, 10 batch callback message
--       ('' when the job is in no batch), 11 batch id.
-- Returns 1 when finished now, 0 when it already was, -1 when the job is gone.
local status = redis.call('HGET', KEYS[1], FIELD.status)
if not status then return -1 end
if is_final(status) then return 0 end
set_status(KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], FIELD.response, ARGV[3], FIELD.error, ARGV[4], FIELD.finished_at, ARGV[5],
           FIELD.inflight, '0')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
release_if_owner(KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[9])
redis.call('HINCRBY', KEYS[4], 'jobs:' .. ARGV[2], 1)
local now = now_ms()
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], FIELD.cb, 'pending')
  redis.call('LPUSH', KEYS[3], ARGV[7])
  redis.call('ZADD', KEYS[5], now + tonumber(ARGV[8]), ARGV[9])
end
local batch = redis.call('HGET', KEYS[1], FIELD.batch)
if batch and ARGV[10] ~= '' then
  local finished = finish_batch_if_done(batch, ARGV[5], tonumber(ARGV[6]), KEYS[5])
  if finished == 1 and redis.call('HEXISTS', batch, 'callback') == 1 then
    -- The batch finished with this job: queue its callback now (the watch would, a little later).
    redis.call('LPUSH', KEYS[3], ARGV[10])
    redis.call('ZADD', KEYS[5], now + tonumber(ARGV[8]), 'batch:' .. ARGV[11])
  end
end
return 1
