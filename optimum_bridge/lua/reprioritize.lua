-- Move a waiting job to another lane, keeping its age (its place by submission) within the lane.
-- KEYS: 1 job hash.  ARGV: 1 lane prefix, 2 new priority, 3 job id.
-- Returns 'moved' | 'running' | 'final' | 'missing'.
local status = redis.call('HGET', KEYS[1], FIELD.status)
if not status then return 'missing' end
if is_final(status) then return 'final' end
if status == 'running' then return 'running' end
local old_lane, seq = lane_of(ARGV[1], KEYS[1])
local waiting = redis.call('ZREM', old_lane, ARGV[3])
redis.call('HSET', KEYS[1], FIELD.priority, ARGV[2])
if waiting == 1 then
  local new_lane = lane_of(ARGV[1], KEYS[1])
  redis.call('ZADD', new_lane, seq, ARGV[3])
end
return 'moved'
