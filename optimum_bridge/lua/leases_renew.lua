-- Extend the lease of every job still held by its owner (one another worker took over, one
-- recovery took back, and one released are left alone: the owner check, and ZADD XX).
-- KEYS: 1 leases (zset: job id -> lease deadline), then the jobs' hashes.
-- ARGV: 1 ttl ms, then for each job hash: the job's id and its owner.  Returns how many were renewed.
local deadline = now_ms() + tonumber(ARGV[1])
local renewed = 0
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], FIELD.owner) == ARGV[2 * i - 1] then
    renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', deadline, ARGV[2 * i - 2])
  end
end
return renewed
