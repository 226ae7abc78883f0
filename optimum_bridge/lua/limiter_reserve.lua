-- Reserve the earliest start that keeps every window of the quota's length at `limit` starts.
-- KEYS: limiter log (zset of start ms), pause (string, ms until which nothing starts).
-- ARGV: limit, window ms (margin included), max wait ms, member.
-- Returns {granted (0|1), wait ms}. Nothing is recorded when the wait would exceed max wait.
local now = now_ms()
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local start = now
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > start then start = pause end
local n = redis.call('ZCARD', KEYS[1])
if n > 0 then
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if tonumber(last[2]) > start then start = tonumber(last[2]) end
end
if n >= limit then
  local nth = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
  local earliest = tonumber(nth[2]) + window
  if earliest > start then start = earliest end
end
if start - now > max_wait then
  return {0, start - now}
end
redis.call('ZADD', KEYS[1], start, ARGV[4])
redis.call('PEXPIRE', KEYS[1], start - now + window + 1000)
return {1, start - now}
