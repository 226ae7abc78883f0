-- Move due messages from the due set to their queues.
-- KEYS: due set (member: queue key, a newline, the message; score: due ms).  ARGV: batch size.
-- Returns {how many messages moved, ms until the next one is due (-1: none waits)}.
local now = now_ms()
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, item in ipairs(items) do
  local sep = string.find(item, '\n', 1, true)
  redis.call('RPUSH', string.sub(item, 1, sep - 1), string.sub(item, sep + 1))
  redis.call('ZREM', KEYS[1], item)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_ms = -1
if first[1] then next_ms = math.max(0, tonumber(first[2]) - now) end
return {#items, next_ms}
