-- Move a waiting job to another lane, keeping its age (its place by submission) within the lane.
-- A job waiting on another job's call (``coalesced_with``) takes the priority, and lifts that call
-- to it if it is higher.
-- KEYS: 1 job hash.  ARGV: 1 lane prefix, 2 new priority, 3 job id, 4 job key prefix.
-- Returns 'moved' | 'running' | 'final' | 'missing'.
local f = redis.call('HMGET', KEYS[1], FIELD.status, FIELD.coalesced_with)
local status, leader = f[1], f[2]
if not status then return 'missing' end
if is_final(status) then return 'final' end
if status == 'running' then return 'running' end
move_lane(ARGV[1], KEYS[1], ARGV[3], ARGV[2])
if leader then lift(ARGV[1], ARGV[4], leader, ARGV[2]) end
return 'moved'
