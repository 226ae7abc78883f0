-- uses: limiter
-- Take a slot now for a job already running (its call is re-sent after a 401), or say how long
-- until one is free.  KEYS: 1 limiter log, 2 the account's limiter state (keys.limiter_state).
-- ARGV: 1 limit, 2 window ms, 3 interval ms, 4 burst credit ms, 5 member.  Returns the wait ms (0: taken).
local now = now_ms()
local at, _, interval, tat = next_slot(KEYS[1], state_fields(KEYS[2]), now, tonumber(ARGV[1]), tonumber(ARGV[2]),
                                       tonumber(ARGV[3]), tonumber(ARGV[4]))
if at > now then return math.ceil(at - now) end
take(KEYS[1], KEYS[2], now, ARGV[5], interval, tat)
return 0
