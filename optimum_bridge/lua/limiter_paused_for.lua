-- Milliseconds left in the pause (0 when none).  KEYS: the account's limiter state (field `pause`).
local pause = tonumber(redis.call('HGET', KEYS[1], 'pause') or '0')
local now = now_ms()
if pause > now then return pause - now end
return 0
