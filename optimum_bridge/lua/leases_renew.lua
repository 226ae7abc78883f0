-- Extend the lease of every job still held by its owner (one another worker took over, one
-- recovery took back, one released, and one that ran out are left alone: lease_held). A lease that
-- ran out is recovery's even before recovery comes, as a lease key that expired was.
-- KEYS: 1 leases (zset: job id -> lease deadline), then the jobs' hashes.
-- ARGV: 1 ttl ms, then for each job hash: the job's id and its owner.  Returns how many were renewed.
local now = now_ms()
local deadline = now + tonumber(ARGV[1])
local renewed = 0
for i = 2, #KEYS do
  local jid = ARGV[2 * i - 2]
  if lease_held(KEYS[1], KEYS[i], jid, ARGV[2 * i - 1], now) then
    renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', deadline, jid)
  end
end
return renewed
