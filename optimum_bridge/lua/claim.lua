-- Take a job's lease and mark it running, unless it is missing, finished or leased elsewhere.
-- KEYS: job hash, job lease.  ARGV: owner, lease ms.
-- Returns {'ok', inflight, attempts, op, submitted_at} | {'leased', pttl} | {'missing'} | {'final'}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', 0, 0} end
if is_final(redis.call('HGET', KEYS[1], FIELD.status)) then return {'final', 0, 0} end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then
  return {'leased', redis.call('PTTL', KEYS[2]), 0}
end
redis.call('HSET', KEYS[1], FIELD.status, 'running')
local fields = redis.call('HMGET', KEYS[1], FIELD.inflight, FIELD.attempts, FIELD.op, FIELD.submitted_at)
return {'ok', fields[1] or '0', tonumber(fields[2]), fields[3], fields[4]}
