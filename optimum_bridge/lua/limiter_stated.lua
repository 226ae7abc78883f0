-- uses: limiter
-- Record what one answer's rate-limit headers state, replacing what the previous answer stated
-- (a statement is trusted for `valid` ms only, never beyond the next statement).
-- The remaining calls hold the next slots until the reset only when the API counted more calls
-- than the log knows (stated limit - remaining > calls in the log): otherwise the log already
-- holds them, to the ms, where a reset stated in whole seconds would hold them too long.
-- KEYS: 1 the account's limiter state, 2 limiter log, 3 the previous version's learned hash
--       (written too, for its workers during a rolling upgrade).
-- ARGV: 1 configured limit, 2 window ms, 3 stated limit per window, normalised and capped by the
--       caller (0: none stated), 4 valid ms, 5 why (e.g. "headers: X-RateLimit-Limit 20 per 60s"),
--       6 remaining calls (-1: none stated), 7 ms until they are renewed (0: none stated),
--       8 the limit as stated, for the calls the API counted (-1: none stated).
-- Returns the limit in force now.
local now = now_ms()
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local stated, valid = tonumber(ARGV[3]), tonumber(ARGV[4])
forget_stale(KEYS[1], now, limit, window)
if stated > 0 then
  if tonumber(redis.call('HGET', KEYS[1], 'h_limit') or '0') ~= stated then
    learn(KEYS[1], KEYS[3], {'h_since', now})
  end
  learn(KEYS[1], KEYS[3], {'h_limit', stated, 'h_until', now + valid, 'h_reason', ARGV[5]})
end
local remaining, reset, raw = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local known = false
if remaining >= 0 and reset > 0 and raw >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  known = redis.call('ZCARD', KEYS[2]) >= raw - remaining
end
if remaining >= 0 and reset > 0 and not known then
  learn(KEYS[1], KEYS[3], {'h_remaining', remaining, 'h_seen', now, 'h_reset', now + reset})
else
  unlearn(KEYS[1], KEYS[3], {'h_remaining', 'h_seen', 'h_reset'})
end
keep_learned(KEYS[1], KEYS[3], now, limit, window)
return learned_limit(KEYS[1], now, limit, window)
