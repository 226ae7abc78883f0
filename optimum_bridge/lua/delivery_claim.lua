-- Take a callback's delivery lease and read the job, unless delivered, dead or taken.
-- KEYS: job hash, delivery lease, callbacks watch.  ARGV: owner, lease ms, watch ms, job id.
-- Returns {'ok', HGETALL of the job} | {'leased', pttl} | {'missing'} | {'done'}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local state = redis.call('HGET', KEYS[1], FIELD.cb)
if state == 'delivered' or state == 'dead' then return {'done'} end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then
  return {'leased', redis.call('PTTL', KEYS[2])}
end
redis.call('ZADD', KEYS[3], now_ms() + tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[4])
return {'ok', redis.call('HGETALL', KEYS[1])}
