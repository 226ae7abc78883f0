-- Stop every process from starting calls for ARGV[1] ms (a pause is only ever extended).
-- KEYS: 1 the account's limiter state (field `pause`, ms on the Redis clock), 2 the previous
-- version's pause key (string; written too: its workers read it during a rolling upgrade, and a
-- pause one of them set is extended, never shortened).  Returns the ms left in the pause now in force.
local now = now_ms()
local until_ms = now + tonumber(ARGV[1])
local mine = tonumber(redis.call('HGET', KEYS[1], 'pause') or '0')
local current = math.max(mine, tonumber(redis.call('GET', KEYS[2]) or '0'))
if until_ms > current then
  redis.call('HSET', KEYS[1], 'pause', until_ms)
  redis.call('SET', KEYS[2], until_ms, 'PX', tonumber(ARGV[1]) + 1000)
  return tonumber(ARGV[1])
end
if current > mine then redis.call('HSET', KEYS[1], 'pause', current) end  -- a previous version's, longer
return current - now
