-- Put back in their lane the jobs whose hand-off or whose worker was lost: dispatched jobs no
-- worker claimed before their deadline (the message was lost), and running jobs whose lease
-- ran out (the worker died): their deadline in the leases set is past (their owner is cleared,
-- so the old owner can neither renew nor send). A message that turns up later is stale
-- (claim.lua), so nothing runs twice; the claim decides from `inflight` whether a call may have
-- been sent. Jobs a previous version's worker runs (in `running`, each with a lease key) are
-- recovered as that version did, when their lease key is gone: during a rolling upgrade, and one
-- ZRANGE of an empty set afterwards.
-- Each job's account is due at once in the ready set, and a waiting dispatcher is woken.
-- KEYS: 1 dispatched, 2 leases (zset: job id -> lease deadline), 3 ready, 4 wake, 5 running (the
--       previous version's).
-- ARGV: 1 job key prefix, 2 lease key prefix (the previous version's), 3 lane prefix, 4 most.
-- Returns a flat list: job id, why ('handoff' or 'lease').
local now = now_ms()
local back = {}
local function relane(jid, why)
  local key = ARGV[1] .. jid
  local status = redis.call('HGET', key, FIELD.status)
  if status == 'running' then
    local attempts = tonumber(redis.call('HGET', key, FIELD.attempts) or '0')
    set_status(key, attempts > 0 and 'retrying' or 'queued')
  elseif status ~= 'queued' and status ~= 'retrying' then
    return
  end
  local lane, seq = lane_of(ARGV[3], key)
  redis.call('ZADD', lane, seq, jid)
  make_ready(KEYS[3], KEYS[4], redis.call('HGET', key, FIELD.account), now)
  table.insert(back, jid)
  table.insert(back, why)
end
for _, jid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))) do
  redis.call('ZREM', KEYS[1], jid)
  relane(jid, 'handoff')
end
for _, jid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))) do
  redis.call('ZREM', KEYS[2], jid)
  redis.call('HDEL', ARGV[1] .. jid, FIELD.owner)
  relane(jid, 'lease')
end
for _, jid in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  if redis.call('EXISTS', ARGV[2] .. jid) == 0 then
    redis.call('ZREM', KEYS[5], jid)
    relane(jid, 'lease')
  end
end
if #back > 0 then wake_if_due(KEYS[3], KEYS[4], now) end
return back
