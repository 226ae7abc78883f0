-- uses: limiter
-- What an account's limiter holds now, for people (``optimum-bridge quota``, ``/ui``, ``/metrics``).
-- KEYS: 1 limiter log, 2 pause, 3 pacer TAT, 4 learned limits.
-- ARGV: 1 limit, 2 window ms, 3 interval ms, 4 burst credit ms.
-- Returns {now, limit in force, interval in force, starts in the window, pause until (ms, 0: none),
--          next slot, then the learned hash as field, value pairs}.
local now = now_ms()
local at, limit, interval = next_slot(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now, tonumber(ARGV[1]),
                                      tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause <= now then pause = 0 end
local out = {now, limit, math.ceil(interval), redis.call('ZCOUNT', KEYS[1], '(' .. (now - tonumber(ARGV[2])), '+inf'), pause, math.ceil(at)}
for _, v in ipairs(redis.call('HGETALL', KEYS[4])) do table.insert(out, v) end
return out
