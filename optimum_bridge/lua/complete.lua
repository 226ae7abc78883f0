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
if batch then
  local b = redis.call('HMGET', batch, 'total', 'n:succeeded', 'n:failed', 'n:cancelled', 'sealed')
  local final = tonumber(b[2] or '0') + tonumber(b[3] or '0') + tonumber(b[4] or '0')
  local sealed = b[5] == '1'  -- until batch_seal.lua runs, more of the batch's jobs may come
  if sealed and final >= tonumber(b[1] or '0') and redis.call('HSETNX', batch, 'finished_at', ARGV[5]) == 1 then
    redis.call('EXPIRE', batch, tonumber(ARGV[6]))
    if ARGV[10] ~= '' and redis.call('HEXISTS', batch, 'callback') == 1 then
      redis.call('HSET', batch, 'cb', 'pending')
      redis.call('LPUSH', KEYS[3], ARGV[10])
      redis.call('ZADD', KEYS[5], now + tonumber(ARGV[8]), 'batch:' .. ARGV[11])
    end
  end
end
return 1
