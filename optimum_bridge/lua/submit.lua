-- Create jobs and put them in their lanes, honouring idempotency keys (one call per batch).
-- ARGV: 1 job key prefix, 2 lane prefix, 3 seq key prefix, 4 pending ttl (s), 5 idempotency ttl (s),
--       6 batch key ('' for none), 7 delayed key prefix, 8 recent-jobs key prefix, 9 recent-jobs cap,
--       then per operation: idempotency key ('' for none), job id, operation JSON, submitted at,
--       priority, account, not before (ms, '' for none).
-- Each new job also enters its account's index of recent jobs (<recent prefix><account>:jobs,
-- scored by seq), trimmed to the cap, so /ui lists recent jobs without scanning every one.
-- A job with a not-before time still to come waits in its account's delayed set instead, and
-- goes to its lane (with its place) when that time comes.
-- A job's lane is <lane prefix><account>:<priority>, scored by a per-account sequence, so the
-- oldest job of a lane is its lowest score. Returns a flat list: job id, 1 if created (0: the
-- existing job for its idempotency key).
local job_prefix, lane_prefix, seq_prefix = ARGV[1], ARGV[2], ARGV[3]
local ttl, idem_ttl, batch, delayed_prefix = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7]
local recent_prefix, recent_cap = ARGV[8], tonumber(ARGV[9])
local now = now_ms()
local out = {}
local touched = {}
for i = 10, #ARGV, 7 do
  local idem, jid, op, submitted = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local priority, account, not_before = ARGV[i + 4], ARGV[i + 5], tonumber(ARGV[i + 6])
  local existing = false
  if idem ~= '' then
    local prev = redis.call('GET', idem)
    if prev and redis.call('EXISTS', job_prefix .. prev) == 1 then existing = prev end
  end
  if existing then
    table.insert(out, existing)
    table.insert(out, 0)
  else
    if idem ~= '' then redis.call('SET', idem, jid, 'EX', idem_ttl) end
    local key = job_prefix .. jid
    local seq = redis.call('INCR', seq_prefix .. account)
    redis.call('HSET', key, FIELD.op, op, FIELD.attempts, 0, FIELD.submitted_at, submitted,
               FIELD.priority, priority, FIELD.account, account, FIELD.seq, seq)
    if batch ~= '' then
      redis.call('HSET', key, FIELD.batch, batch)
      redis.call('HSET', batch, 'last:' .. priority, seq)
    end
    set_status(key, 'queued')
    redis.call('EXPIRE', key, ttl)
    if not_before and not_before > now then
      redis.call('ZADD', delayed_prefix .. account, not_before, jid)
    else
      redis.call('ZADD', lane_prefix .. account .. ':' .. priority, seq, jid)
    end
    local recent = recent_prefix .. account .. ':jobs'
    redis.call('ZADD', recent, seq, jid)
    touched[recent] = true
    table.insert(out, jid)
    table.insert(out, 1)
  end
end
for recent in pairs(touched) do
  redis.call('ZREMRANGEBYRANK', recent, 0, -(recent_cap + 1))
end
return out
