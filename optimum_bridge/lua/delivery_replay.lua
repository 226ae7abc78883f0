-- Queue a dead-lettered callback again.
-- KEYS: dead letters, job hash, callbacks queue, callbacks watch.  ARGV: job id, message, watch ms.
-- Returns 1 when replayed.
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], FIELD.cb, 'pending')
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[4], now_ms() + tonumber(ARGV[3]), ARGV[1])
return 1
