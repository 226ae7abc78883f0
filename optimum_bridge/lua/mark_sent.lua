-- uses: limiter
-- Count an attempt whose request is about to leave, and count its start where it really is: the
-- last moment before the call goes out. A worker slowed down since its claim (a loaded host)
-- could otherwise send later than its slot, and bunch calls at the API; if the quota's window
-- no longer has room at this moment, the call is not sent and the slot is given back.
-- With an owner (ARGV 5), nothing is counted unless the job's lease is the owner's and live on this
-- Redis: a write redis-py retried on a primary that a failover promoted, which never saw the claim,
-- must not send the call (the job would run again elsewhere).
-- KEYS: 1 job hash, 2 the account's limiter log, 3 its limiter state (learned limits), 4 leases (zset: job id ->
--       lease deadline).
-- ARGV: 1 log member (<job id>.<dispatch>), 2 window ms, 3 limit, 4 sent at (ISO), 5 owner ('' for none),
--       6 job id.
-- Returns the attempt number, 0 when the call may not start now, -1 when the lease is not the owner's.
local now = now_ms()
if ARGV[5] ~= '' and not lease_held(KEYS[4], KEYS[1], ARGV[6], ARGV[5], now) then return -1 end
local window = tonumber(ARGV[2])
local limit = learned_limit(KEYS[3], now, tonumber(ARGV[3]), window)
local own = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]) or '0')
if own < now then
  local starts = redis.call('ZCOUNT', KEYS[2], '(' .. (now - window), '+inf')
  if own <= now - window then starts = starts + 1 end
  if starts > limit then
    redis.call('ZREM', KEYS[2], ARGV[1])
    return 0
  end
  redis.call('ZADD', KEYS[2], now, ARGV[1])
end
local attempts = redis.call('HINCRBY', KEYS[1], FIELD.attempts, 1)
redis.call('HSET', KEYS[1], FIELD.inflight, '1', FIELD.started_at, ARGV[4])
return attempts
