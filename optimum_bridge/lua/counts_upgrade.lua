-- Move the stats hash to the counts of process.metrics (version 2), once: before it, every API call
-- of an account was counted twice, in `calls:<status>` and in `acct:<account>:calls:<status>`; from
-- it on only in the account's, and `calls:<status>` counts the calls without an account. So the
-- account's calls counted so far are taken out of `calls:<status>` (readers add them back), and the
-- version field says readers may add (process.metrics.with_totals). Later runs change nothing.
-- KEYS: 1 stats.  ARGV: 1 the version field.  Returns 1 when it upgraded now, 0 when done already.
if redis.call('HSETNX', KEYS[1], ARGV[1], '2') == 0 then return 0 end
local flat = redis.call('HGETALL', KEYS[1])
local accounted = {}
for i = 1, #flat, 2 do
  local status = string.match(flat[i], '^acct:[^:]+:calls:(.+)$')
  if status then accounted[status] = (accounted[status] or 0) + tonumber(flat[i + 1]) end
end
for status, n in pairs(accounted) do redis.call('HINCRBY', KEYS[1], 'calls:' .. status, -n) end
return 1
