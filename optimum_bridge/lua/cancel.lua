-- Cancel jobs that have not started their call: each ends 'cancelled' (final), leaves its lane,
-- delayed set or hand-off (a message already sent for it is then stale), and makes no call. Its
-- callback and its batch's, if the batch is now final, are left to the callbacks watch to queue.
-- A job running (its call may be under way), or waiting on a call that is, or already final, is left alone.
-- A read others joined (spec 13) hands its call on: the oldest of them takes its place in its own
-- lane and the others wait on it. A read that joined another's call just leaves it.
-- An heir's account is due at once in the ready set; a hand-off undone frees a thread.
-- KEYS: 1 dispatched, 2 ready, 3 wake.  ARGV: 1 job key prefix, 2 lane prefix, 3 delayed key prefix, 4 finished at,
--       5 result ttl (s), 6 callbacks watch key, 7 followers key prefix, 8 stats, 9 the error to record
--       on each cancelled job (JSON; '' for none: a producer's cancel), then job ids.
-- Returns, per job id: 'cancelled', 'running', 'final' or 'missing'.

-- `jid` gives up its call: the oldest job still waiting on it leads it instead (or nobody does).
local function hand_on(jid, key)
  local followers = ARGV[7] .. jid
  local heir, heir_seq, rest = nil, nil, {}
  for _, fid in ipairs(redis.call('SMEMBERS', followers)) do
    local f = redis.call('HMGET', ARGV[1] .. fid, FIELD.status, FIELD.coalesced_with, FIELD.seq)
    if f[1] and not is_final(f[1]) and f[2] == jid then
      local seq = tonumber(f[3])
      if heir == nil or seq < heir_seq then
        if heir then table.insert(rest, heir) end
        heir, heir_seq = fid, seq
      else
        table.insert(rest, fid)
      end
    end
  end
  redis.call('DEL', followers)
  local read = redis.call('HGET', key, FIELD.read)
  local leads = read and redis.call('GET', read) == jid
  if not heir then
    if leads then redis.call('DEL', read) end
    return
  end
  local heir_key = ARGV[1] .. heir
  redis.call('HDEL', heir_key, FIELD.coalesced_with)
  local account = redis.call('HGET', heir_key, FIELD.account)
  redis.call('HINCRBY', ARGV[8], 'acct:' .. account .. ':reads_shared', -1)  -- it makes the call now
  local lane, seq = lane_of(ARGV[2], heir_key)
  redis.call('ZADD', lane, seq, heir)
  make_ready(KEYS[2], KEYS[3], account, now_ms())
  local ttl = redis.call('TTL', heir_key)
  for _, fid in ipairs(rest) do
    redis.call('HSET', ARGV[1] .. fid, FIELD.coalesced_with, heir)
    redis.call('SADD', ARGV[7] .. heir, fid)
    ttl = math.max(ttl, redis.call('TTL', ARGV[1] .. fid))
  end
  -- The call outlives every job waiting on it.
  extend(heir_key, ttl)
  if #rest > 0 then redis.call('EXPIRE', ARGV[7] .. heir, ttl) end
  if leads then redis.call('SET', read, heir, 'EX', ttl) end
  relane(ARGV[2], ARGV[1], ARGV[7], heir)
end

local out = {}
for i = 10, #ARGV do
  local jid = ARGV[i]
  local key = ARGV[1] .. jid
  local f = redis.call('HMGET', key, FIELD.status, FIELD.account, FIELD.op, FIELD.batch, FIELD.coalesced_with)
  local status, leader = f[1], f[5]
  if not status then
    table.insert(out, 'missing')
  elseif is_final(status) then
    table.insert(out, 'final')
  elseif call_running(ARGV[1], status, leader) then
    table.insert(out, 'running')
  else
    if leader then
      redis.call('SREM', ARGV[7] .. leader, jid)
      redis.call('HDEL', key, FIELD.coalesced_with)
      redis.call('HINCRBY', ARGV[8], 'acct:' .. f[2] .. ':reads_shared', -1)
      relane(ARGV[2], ARGV[1], ARGV[7], leader)
    else
      hand_on(jid, key)
    end
    local lane = lane_of(ARGV[2], key)
    redis.call('ZREM', lane, jid)
    redis.call('ZREM', ARGV[3] .. f[2], jid)
    local handed_off = redis.call('ZREM', KEYS[1], jid) == 1
    if handed_off then wake_if_due(KEYS[2], KEYS[3], now_ms()) end
    set_status(key, 'cancelled')
    redis.call('HSET', key, FIELD.finished_at, ARGV[4], FIELD.inflight, '0')
    if ARGV[9] ~= '' then redis.call('HSET', key, FIELD.error, ARGV[9]) end
    redis.call('EXPIRE', key, tonumber(ARGV[5]))
    if has_callback(f[3]) then
      redis.call('HSET', key, FIELD.cb, 'pending')
      redis.call('ZADD', ARGV[6], now_ms(), jid)
    end
    finish_batch_if_done(f[4], ARGV[4], tonumber(ARGV[5]), ARGV[6])
    table.insert(out, 'cancelled')
  end
end
return out
