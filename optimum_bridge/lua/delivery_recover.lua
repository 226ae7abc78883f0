-- Queue again a pending callback whose message vanished, once its watch has expired.
-- KEYS: job hash, delivery lease, callbacks queue, callbacks watch.
-- ARGV: job id, callback message, watch ms.  Returns 1 when queued again.
local now = now_ms()
local score = redis.call('ZSCORE', KEYS[4], ARGV[1])
if not score or tonumber(score) > now then return 0 end
if redis.call('HGET', KEYS[1], FIELD.cb) ~= 'pending' then
  redis.call('ZREM', KEYS[4], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[3]), ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('LPUSH', KEYS[3], ARGV[2])
return 1
