-- Fold the pending counts into their hashes (fold_counts, in _prelude.lua), then read the hashes
-- given, in the same step: every reader of the counters reads through this, so it never sees fewer
-- counts than scripts pushed before it (process.metrics).
-- KEYS: 1 the pending list, 2... the hashes to read.  Returns each hash's HGETALL, in KEYS' order.
fold_counts(KEYS[1])
local hashes = {}
for i = 2, #KEYS do hashes[i - 1] = redis.call('HGETALL', KEYS[i]) end
return hashes
