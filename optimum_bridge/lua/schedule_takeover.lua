-- Take over a claimed tick whose worker died before making its batch: only if the tick is still
-- claimed by that worker (its batch not recorded, no one else took it over), in one step.
-- KEYS: 1 the tick's key, 2 making (zset).
-- ARGV: 1 the dead worker's claim ("claimed:<worker>"), 2 this worker, 3 the making member ("name|tick").
-- Returns 1 when this caller now owns the tick.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], 'claimed:' .. ARGV[2], 'KEEPTTL')
redis.call('ZADD', KEYS[2], now_ms(), ARGV[3])
return 1
