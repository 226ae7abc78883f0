-- Start an audit unless one started at or after ARGV[1] (ms).  KEYS: audit started.
-- ARGV: the request's settled time, now (ms).  Returns 1 when this caller runs the audit.
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if last >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
