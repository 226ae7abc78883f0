-- Park a job in the due set for a retry or a deferral, and release its lease.
-- KEYS: job hash, job lease, due set.
-- ARGV: owner, new status ('' to keep), error JSON ('' to keep), delay ms, due member,
--       response JSON ('' to keep).
-- Returns 1 when parked, 0 when the job is already final, -1 when it is gone.
local status = redis.call('HGET', KEYS[1], FIELD.status)
if not status then return -1 end
if is_final(status) then return 0 end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], FIELD.status, ARGV[2]) end
redis.call('HSET', KEYS[1], FIELD.inflight, '0')
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], FIELD.error, ARGV[3]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], FIELD.response, ARGV[6]) end
release_if_owner(KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], now_ms() + tonumber(ARGV[4]), ARGV[5])
return 1
