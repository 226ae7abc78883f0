-- Stop every process from starting calls for ARGV[1] ms (a pause is only ever extended).
-- KEYS: pause (string, ms on the Redis clock).  Returns the ms left in the pause now in force.
local now = now_ms()
local until_ms = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ms > current then
  redis.call('SET', KEYS[1], until_ms, 'PX', tonumber(ARGV[1]) + 1000)
  return tonumber(ARGV[1])
end
return current - now
