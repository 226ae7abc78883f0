-- Park a job for a retry: it waits in its account's delayed set, then goes back to its lane
-- (dispatch.lua moves it when due: its account is in the ready set by then); the lease is
-- released, and with it a worker thread, which a dispatcher waiting for one hears of.
-- KEYS: 1 job hash, 2 leases (zset: job id -> lease deadline), 3 delayed set, 4 running (the
--       previous version's: not written, kept so that the keys after it keep their numbers),
--       5 ready, 6 wake, 7 (last) the account's limiter state (its delayed hint).
-- ARGV: 1 owner, 2 new status, 3 error JSON ('' to keep), 4 delay ms, 5 job id,
--       6 response JSON ('' to keep), 7 account, 8... the call's metrics (add_counts), added whatever
--       the job's state.
-- Only the job's owner parks it: a worker whose lease was taken back (recovery clears the owner)
-- or taken over leaves the job alone, for its status and `inflight` are the new holder's now (a
-- call the new holder sent must never be made again after a crash).
-- Returns 1 when parked, 0 when the job is already final or not the caller's any more, -1 when it
-- is gone.
add_counts(8)  -- one entry on the pending list (folded when it reaches its bound)
local f = redis.call('HMGET', KEYS[1], FIELD.status, FIELD.owner)
local status = f[1]
if not status then return -1 end
if is_final(status) or f[2] ~= ARGV[1] then return 0 end
set_status(KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], FIELD.inflight, '0')
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], FIELD.error, ARGV[3]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], FIELD.response, ARGV[6]) end
redis.call('ZREM', KEYS[2], ARGV[5])  -- the lease: ours (the owner check above)
local now = now_ms()
local due = now + tonumber(ARGV[4])
redis.call('ZADD', KEYS[3], due, ARGV[5])
lower_delayed_hint(KEYS[#KEYS], due)  -- the last key: the account's limiter state (its delayed hint)
make_ready(KEYS[5], KEYS[6], ARGV[7], due)
wake_if_due(KEYS[5], KEYS[6], now)
return 1
