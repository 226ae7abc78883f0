-- uses: limiter
-- What an account's limiter holds now, for people (``optimum-bridge quota``, ``/ui``, ``/metrics``).
-- KEYS: 1 limiter log, 2 the account's limiter state (keys.limiter_state).
-- ARGV: 1 limit, 2 window ms, 3 interval ms, 4 burst credit ms.
-- Returns {now, limit in force, interval in force, starts in the window, pause until (ms, 0: none),
--          next slot, then the learned fields (h_*, a_*) as field, value pairs}.
local now = now_ms()
local f = state_fields(KEYS[2])
local at, limit, interval = next_slot(KEYS[1], f, now, tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
                                      tonumber(ARGV[4]))
local pause = tonumber(f[S_PAUSE] or '0')
if pause <= now then pause = 0 end
local out = {now, limit, math.ceil(interval), redis.call('ZCOUNT', KEYS[1], '(' .. (now - tonumber(ARGV[2])), '+inf'), pause, math.ceil(at)}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  if string.match(all[i], '^[ha]_') then
    table.insert(out, all[i])
    table.insert(out, all[i + 1])
  end
end
return out
