-- One round of the workers' sweep of removed accounts (spec 12a): the jobs that still wait on an
-- account removed in the last day (in a lane, parked, or handed to a worker), for the caller to
-- cancel. One worker of the pool does each round (the claim); an idle worker pays this one call.
-- A name leaves the removed set after a round that found nothing of it, neither waiting nor running,
-- once past the longest a job of it may still come back (a call under way, its retry, a redelivery).
-- Its limiter state and log go then too (a call that finished after the removal may have written
-- them again, and neither has a TTL).
-- KEYS: 1 removed accounts, 2 the round's claim, 3 dispatched, 4 leases (the jobs running), 5 running
--       (the previous version's: its workers' jobs, during a rolling upgrade).
-- ARGV: 1 job key prefix, 2 lane prefix, 3 delayed key prefix, 4 '1' to claim the round (else: the
--       claimed round goes on), 5 claim ms, 6 sweep-for ms, 7 quiet ms, 8 most ids, 9 limiter key prefix.
-- Returns the ids of waiting jobs of removed accounts, at most ARGV[8].
local removed = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
if #removed == 0 then return {} end
if ARGV[4] == '1' and not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[5]) then return {} end
local now, most = now_ms(), tonumber(ARGV[8])
local since, names, busy, ids, seen = {}, {}, {}, {}, {}
local function forget(name)
  redis.call('ZREM', KEYS[1], name)
  redis.call('DEL', ARGV[9] .. name .. ':state', ARGV[9] .. name .. ':log')
end
for i = 1, #removed, 2 do
  local name, at = removed[i], tonumber(removed[i + 1])
  if at <= now - tonumber(ARGV[6]) then
    forget(name)
  else
    since[name] = at
    table.insert(names, name)
  end
end
local function found(name, jid)
  busy[name] = true
  if #ids < most and not seen[jid] then
    seen[jid] = true
    table.insert(ids, jid)
  end
end
for _, name in ipairs(names) do
  for _, priority in ipairs({'urgent', 'normal', 'bulk'}) do
    for _, jid in ipairs(redis.call('ZRANGE', ARGV[2] .. name .. ':' .. priority, 0, most - 1)) do found(name, jid) end
  end
  for _, jid in ipairs(redis.call('ZRANGE', ARGV[3] .. name, 0, most - 1)) do found(name, jid) end
end
for _, jid in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  local owner = redis.call('HGET', ARGV[1] .. jid, FIELD.account)
  if owner and since[owner] then found(owner, jid) end
end
for _, running in ipairs({KEYS[4], KEYS[5]}) do  -- a call under way: left to finish, watched
  for _, jid in ipairs(redis.call('ZRANGE', running, 0, -1)) do
    local owner = redis.call('HGET', ARGV[1] .. jid, FIELD.account)
    if owner and since[owner] then busy[owner] = true end
  end
end
for _, name in ipairs(names) do
  if not busy[name] and since[name] <= now - tonumber(ARGV[7]) then forget(name) end
end
return ids
