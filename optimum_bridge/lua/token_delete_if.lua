-- Delete the stored token only if it is still the one with this fingerprint (a 401 on an old
-- token must not drop a newer one another worker already stored).
-- KEYS: token hash.  ARGV: fingerprint.  Returns 1 when deleted.
if redis.call('HGET', KEYS[1], 'fp') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
