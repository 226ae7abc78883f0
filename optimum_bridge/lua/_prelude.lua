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

-- Move a job to `status`, keeping its batch's counts (``n:<status>``) in step; returns the old status.
local function set_status(job_key, status)
  local current = redis.call('HMGET', job_key, FIELD.status, FIELD.batch)
  local old, batch = current[1], current[2]
  if old == status then return old end
  redis.call('HSET', job_key, FIELD.status, status)
  if batch then
    if old then redis.call('HINCRBY', batch, 'n:' .. old, -1) end
    redis.call('HINCRBY', batch, 'n:' .. status, 1)
  end
  return old
end

-- The lane a job waits in: <lane prefix><account>:<priority>.
local function lane_of(lane_prefix, job_key)
  local f = redis.call('HMGET', job_key, FIELD.account, FIELD.priority, FIELD.seq)
  return lane_prefix .. f[1] .. ':' .. f[2], tonumber(f[3])
end
