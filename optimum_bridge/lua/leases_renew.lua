-- Extend every lease still held by its owner (a lease another worker took over is left alone).
-- KEYS: lease keys.  ARGV: ttl ms, then one owner per key.  Returns how many were renewed.
local renewed = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, tonumber(ARGV[1]))
    renewed = renewed + 1
  end
end
return renewed
