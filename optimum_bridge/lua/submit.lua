-- Create jobs and queue their messages, honouring idempotency keys (one call per batch).
-- ARGV: job key prefix, queue key, pending ttl (s), idempotency ttl (s), then per operation:
--       idempotency key ('' for none), job id, operation JSON, submitted at, Celery message.
-- Returns a flat list: job id, 1 if created (0: an existing job for the idempotency key).
local job_prefix, queue = ARGV[1], ARGV[2]
local ttl, idem_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for i = 5, #ARGV, 5 do
  local idem, jid, op, submitted, msg = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
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
    redis.call('HSET', key, FIELD.op, op, FIELD.status, 'queued', FIELD.attempts, 0, FIELD.submitted_at, submitted)
    redis.call('EXPIRE', key, ttl)
    redis.call('LPUSH', queue, msg)
    table.insert(out, jid)
    table.insert(out, 1)
  end
end
return out
