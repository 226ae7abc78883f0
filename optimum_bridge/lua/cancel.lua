-- Cancel jobs that have not started their call: each ends 'cancelled' (final), leaves its lane,
-- delayed set or hand-off (a message already sent for it is then stale), and makes no call. Its
-- callback and its batch's, if the batch is now final, are left to the callbacks watch to queue.
-- A job running (its call may be under way) or already final is left alone.
-- KEYS: 1 dispatched.  ARGV: 1 job key prefix, 2 lane prefix, 3 delayed key prefix, 4 finished at,
--       5 result ttl (s), 6 callbacks watch key, then job ids.
-- Returns, per job id: 'cancelled', 'running', 'final' or 'missing'.
local out = {}
for i = 7, #ARGV do
  local jid = ARGV[i]
  local key = ARGV[1] .. jid
  local f = redis.call('HMGET', key, FIELD.status, FIELD.account, FIELD.op, FIELD.batch)
  local status = f[1]
  if not status then
    table.insert(out, 'missing')
  elseif is_final(status) then
    table.insert(out, 'final')
  elseif status == 'running' then
    table.insert(out, 'running')
  else
    local lane = lane_of(ARGV[2], key)
    redis.call('ZREM', lane, jid)
    redis.call('ZREM', ARGV[3] .. f[2], jid)
    redis.call('ZREM', KEYS[1], jid)
    set_status(key, 'cancelled')
    redis.call('HSET', key, FIELD.finished_at, ARGV[4], FIELD.inflight, '0')
    redis.call('EXPIRE', key, tonumber(ARGV[5]))
    if string.find(f[3], '"callback"', 1, true) then
      redis.call('HSET', key, FIELD.cb, 'pending')
      redis.call('ZADD', ARGV[6], now_ms(), jid)
    end
    finish_batch_if_done(f[4], ARGV[4], tonumber(ARGV[5]), ARGV[6])
    table.insert(out, 'cancelled')
  end
end
return out
