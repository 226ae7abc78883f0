-- Milliseconds left in the pause (0 when none).  KEYS: pause.
local pause = tonumber(redis.call('GET', KEYS[1]) or '0')
local now = now_ms()
if pause > now then return pause - now end
return 0
