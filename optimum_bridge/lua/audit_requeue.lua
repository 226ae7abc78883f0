-- Queue a fresh message for a job still waiting, at the front of the queue (it waited longest).
-- KEYS: job hash, operations queue.  ARGV: message.  Returns 1 when queued.
local status = redis.call('HGET', KEYS[1], FIELD.status)
if status ~= 'queued' and status ~= 'retrying' then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
