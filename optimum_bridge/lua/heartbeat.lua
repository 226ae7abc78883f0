-- A worker says it is alive, with how many threads it gives to operations; the capacity the
-- dispatcher may fill is the sum over the workers heard from recently.
-- The capacity may have grown (a worker started): a dispatcher waiting for a thread is woken if an
-- account is due.
-- KEYS: 1 workers (zset: name -> last beat, s), 2 worker threads (hash: name -> threads), 3 capacity,
--       4 ready, 5 wake.
-- ARGV: 1 name, 2 threads, 3 seconds a worker counts as alive, 4 seconds before a silent one is forgotten.
local t = redis.call('TIME')
local now = tonumber(t[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[4]))) do
  redis.call('ZREM', KEYS[1], gone)
  redis.call('HDEL', KEYS[2], gone)
end
local total = 0
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[3]), '+inf')) do
  total = total + tonumber(redis.call('HGET', KEYS[2], name) or '0')
end
redis.call('SET', KEYS[3], total, 'EX', tonumber(ARGV[3]))
wake_if_due(KEYS[4], KEYS[5], now * 1000 + math.floor(tonumber(t[2]) / 1000))
return total
