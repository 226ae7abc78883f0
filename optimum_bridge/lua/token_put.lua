-- Store a freshly fetched token, unless the account's credentials changed while it was fetched
-- (spec 12a): a rotation drops the token in account_put.lua, and a fetch begun with the old secret
-- and ending after it must not store that token for every worker.
-- KEYS: 1 the token hash, 2 the account's record (a runtime account; absent for one of the file).
-- ARGV: 1 value (as stored), 2 fingerprint, 3 expiry (epoch s), 4 TTL ms, then field, value pairs the
--       record must still hold (none: a file account, stored as is).
-- Returns 'stored', 'changed' (record differs: the caller fetches again) or 'gone' (record removed).
if #ARGV > 4 then
  if redis.call('EXISTS', KEYS[2]) == 0 then return 'gone' end
  for i = 5, #ARGV, 2 do
    if redis.call('HGET', KEYS[2], ARGV[i]) ~= ARGV[i + 1] then return 'changed' end
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'fp', ARGV[2], 'exp', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 'stored'
