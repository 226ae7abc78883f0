-- One look for due ticks, for every schedule at once (the upkeep timer of every worker, each turn).
-- It records when a worker last looked; a gap longer than ARGV[1] since the previous look means no
-- worker ran: that span is written as the last outage, so whichever worker then reads a tick of it
-- treats it as missed (spec 15, `missed`), in the same step as the gap is seen.
-- KEYS: 1 due (zset: name -> next tick ms), 2 seen (string: ms), 3 outage (string: "from:to"),
--       4 sources (zset: "name|tick" -> when to look at its source job again, ms),
--       5 making (zset: "name|tick" claimed, batch not yet made -> when claimed, ms).
-- ARGV: 1 outage threshold (ms), 2 most entries returned per set, 3 age (ms) of a claim worth checking.
-- Returns {now, outage from, outage to, first next tick (-1: none), #due, #sources,
--          name, tick, ..., source members..., making members...}.
local now = now_ms()
local limit = tonumber(ARGV[2])
local seen = tonumber(redis.call('GET', KEYS[2]) or '0')
redis.call('SET', KEYS[2], now, 'PX', 7 * 86400000)
if now - seen > tonumber(ARGV[1]) then
  redis.call('SET', KEYS[3], seen .. ':' .. now)
end
local outage = redis.call('GET', KEYS[3]) or '0:0'
local sep = string.find(outage, ':', 1, true)
local reply = {now, tonumber(string.sub(outage, 1, sep - 1)), tonumber(string.sub(outage, sep + 1)), -1, 0, 0}
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then reply[4] = tonumber(first[2]) end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
reply[5] = #due / 2
for i = 1, #due, 2 do
  reply[#reply + 1] = due[i]
  reply[#reply + 1] = tonumber(due[i + 1])
end
local sources = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, limit)
reply[6] = #sources
for _, member in ipairs(sources) do reply[#reply + 1] = member end
local making = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now - tonumber(ARGV[3]), 'LIMIT', 0, limit)
for _, member in ipairs(making) do reply[#reply + 1] = member end
return reply
