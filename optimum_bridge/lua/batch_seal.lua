-- Seal a batch once all its jobs are submitted: its total becomes the jobs it created (a repeated
-- idempotency key gives an existing job, which is not the batch's). If they are all final by
-- now, the batch finishes here, and its callback is left to the callbacks watch to queue.
-- KEYS: 1 batch hash, 2 callbacks watch.  ARGV: 1 jobs created, 2 finished at, 3 result ttl (s),
--       4 batch id.  Returns 1 when the batch finished now.
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'sealed', 1)
return finish_batch_if_done(KEYS[1], ARGV[2], tonumber(ARGV[3]), KEYS[2])
