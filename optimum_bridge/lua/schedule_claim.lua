-- Move a schedule past a due tick, and claim the tick it runs, in one step: whichever worker finds
-- the schedule still at `expected` moves it on and (when ARGV[3] names a tick) owns that tick; every
-- other worker that read the same due entry finds it moved and does nothing. The tick key (SET NX)
-- also refuses a tick claimed before (a manual run, a replaced schedule), so a tick makes one batch.
-- The claimed tick is noted in `making` until its batch is recorded, so that if its worker dies
-- first, another takes it over (lua/schedule_takeover.lua).
-- KEYS: 1 due (zset), 2 the tick's key (string; unused when ARGV[3] is empty), 3 making (zset).
-- ARGV: 1 name, 2 expected next tick (ms), 3 the tick to claim (ms, or ""), 4 the new next tick (ms),
--       5 the tick key's TTL (s), 6 the claiming worker.
-- Returns 1 when this caller owns the tick, 0 otherwise (moved or not).
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '-1') ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[4]), ARGV[1])
if ARGV[3] == '' then
  return 0
end
if redis.call('SET', KEYS[2], 'claimed:' .. ARGV[6], 'NX', 'EX', tonumber(ARGV[5])) then
  redis.call('ZADD', KEYS[3], now_ms(), ARGV[1] .. '|' .. ARGV[3])
  return 1
end
return 0
