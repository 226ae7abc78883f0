-- Move a waiting job to another lane, keeping its age (its place by submission) within the lane.
-- A call others wait on stays at least at their priority; a job waiting on another job's call
-- (``coalesced_with``) takes the priority, and that call's lane follows (spec 13); once that call
-- runs, the job is running too.
-- KEYS: 1 job hash.  ARGV: 1 lane prefix, 2 new priority, 3 job id, 4 job key prefix, 5 followers prefix.
-- Returns 'moved' | 'running' | 'final' | 'missing'.
local f = redis.call('HMGET', KEYS[1], FIELD.status, FIELD.coalesced_with)
local status, leader = f[1], f[2]
if not status then return 'missing' end
if is_final(status) then return 'final' end
if call_running(ARGV[4], status, leader) then return 'running' end
move_lane(ARGV[1], KEYS[1], ARGV[3], ARGV[2])
redis.call('HDEL', KEYS[1], FIELD.own_priority)
if leader then
  relane(ARGV[1], ARGV[4], ARGV[5], leader)
else
  relane(ARGV[1], ARGV[4], ARGV[5], ARGV[3])
end
return 'moved'
