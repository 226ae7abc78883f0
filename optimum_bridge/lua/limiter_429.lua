-- uses: limiter
-- An unexplained 429 (no header says the quota is used up) while the bridge kept to its configured
-- limit: the API evidently allows fewer calls per window than the n that started in it, so the
-- learned limit drops to n - 1 (never below 1): the multiplicative decrease of AIMD, to the evidence.
-- It grows back by one per window after a hold of `hold` windows (lua/_limiter.lua); a 429 that
-- comes again before the limit is back doubles the hold (up to `max hold`), so probing a real
-- lower quota costs fewer and fewer 429s, while a one-off 429 is forgotten within a few windows.
-- 429s of one burst (within one window of the first) keep the lowest evidence and one hold.
-- KEYS: 1 limiter log, 2 the account's limiter state, 3 the previous version's learned hash
--       (written too, for its workers during a rolling upgrade).
-- ARGV: 1 configured limit, 2 window ms, 3 hold (windows), 4 max hold, 5 what the headers said.
-- Returns {limit in force now, starts in the window, hold} ({0, n, 0}: over the configured limit, nothing learned).
local now = now_ms()
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if n > limit then return {0, n, 0} end
local evident = math.max(1, n - 1)
local hold, since = tonumber(ARGV[3]), now
forget_stale(KEYS[2], now, limit, window)
local f = redis.call('HMGET', KEYS[2], 'a_limit', 'a_since', 'a_hold')
local a_limit, a_since, a_hold = tonumber(f[1]), tonumber(f[2]), tonumber(f[3] or '0')
if a_limit and a_since then
  if now - a_since < window then
    evident, hold, since = math.min(evident, a_limit), a_hold, a_since
  elseif a_limit + math.max(0, math.floor((now - a_since) / window) - a_hold) < limit then
    hold = math.min(a_hold * 2, tonumber(ARGV[4]))  -- it came back before the limit did: probe less
  end
end
local why = string.format('429 at %d calls in the window (configured %d), %s', n, limit, ARGV[5])
learn(KEYS[2], KEYS[3], {'a_limit', evident, 'a_since', since, 'a_hold', hold, 'a_reason', why, 'a_at', now})
keep_learned(KEYS[2], KEYS[3], now, limit, window)
return {learned_limit(KEYS[2], now, limit, window), n, hold}
