-- Remove an account created at runtime (spec 12a): its record, token, quota state and document go,
-- it leaves the ready set and the quotas the dispatch reads (no slot is given for it from now on),
-- and every process learns it through a new version. Its waiting jobs are cancelled next, by the
-- caller (accounts.removal), and again by the workers' upkeep for a day for any that come late.
-- KEYS: 1 the account's hash, 2 the name index, 3 version, 4 changes, 5 removed, 6 quotas, 7 ready,
--       8 openapi due, then keys of the account to delete (token, limiter state, document).
-- ARGV: 1 name.  Returns the new version, or 'missing'.
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
redis.call('DEL', KEYS[1])
for i = 9, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
redis.call('ZREM', KEYS[7], ARGV[1])
redis.call('ZREM', KEYS[8], ARGV[1])
redis.call('ZADD', KEYS[5], now_ms(), ARGV[1])
local version = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[4], version, ARGV[1])
return version
