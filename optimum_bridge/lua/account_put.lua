-- Create or change an account created at runtime (spec 12a) and tell every process: a new version,
-- and the account's name in the changes set at that version (workers read what changed since theirs).
-- A changed secret or client id drops the account's token in the same step (the next call fetches one).
-- KEYS: 1 the account's hash, 2 the name index, 3 version, 4 changes, 5 removed, 6 the account's token.
-- ARGV: 1 name, 2 'create' or 'update', 3 '1' to drop the token, 4 the encrypted secret the record
--       must still hold ('' for any: rekey's compare-and-set), then field, value pairs.
-- Returns the new version, or 'exists' (create) / 'missing' (update) / 'changed' (secret not ARGV[4]).
local exists = redis.call('EXISTS', KEYS[1]) == 1
if ARGV[2] == 'create' and exists then return 'exists' end
if ARGV[2] == 'update' and not exists then return 'missing' end
if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], 'secret') ~= ARGV[4] then return 'changed' end
local fields = {}
for i = 5, #ARGV do table.insert(fields, ARGV[i]) end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
if ARGV[3] == '1' then redis.call('DEL', KEYS[6]) end
local version = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[4], version, ARGV[1])
return version
