-- uses: limiter
-- What the forecasts need, read in one step: when the next slot of an account is, how many
-- jobs wait in each lane, and how many would start before each of some positions.
-- KEYS: 1 urgent lane, 2 normal lane, 3 bulk lane, 4 limiter log, 5 the account's limiter state.
-- ARGV: 1 limit, 2 window ms, 3 interval ms, 4 burst credit ms, then pairs: lane index (1-3),
--       seq (the position asked: jobs ahead of that seq in that lane, and in every higher lane).
-- Returns {now, next slot, interval in force, waiting in lanes 1..3, ahead of each asked position...}.
local now = now_ms()
local at, _, interval = next_slot(KEYS[4], state_fields(KEYS[5]), now, tonumber(ARGV[1]), tonumber(ARGV[2]),
                                  tonumber(ARGV[3]), tonumber(ARGV[4]))
local sizes = {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3])}
local out = {now, math.ceil(at), math.ceil(interval), sizes[1], sizes[2], sizes[3]}
for i = 5, #ARGV, 2 do
  local lane, seq = tonumber(ARGV[i]), ARGV[i + 1]
  local ahead = redis.call('ZCOUNT', KEYS[lane], '-inf', '(' .. seq)
  for j = 1, lane - 1 do ahead = ahead + sizes[j] end
  table.insert(out, ahead)
end
return out
