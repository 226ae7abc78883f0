-- Shared by every script (prepended by optimum_bridge/lua.py; FIELD is generated there from
-- jobs.JobField, so the job hash's field names are declared once, in Python).

-- Milliseconds on the Redis server's clock: every process shares it, whatever its own clock says.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Delete a lease or lock only if `owner` still holds it (a lease taken over is left alone).
local function release_if_owner(key, owner)
  if redis.call('GET', key) == owner then
    return redis.call('DEL', key)
  end
  return 0
end

local function is_final(status)
  return status == 'succeeded' or status == 'failed'
end
