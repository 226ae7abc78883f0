-- Release a lock or lease held by ARGV[1].  KEYS: the lock.  Returns 1 when released.
return release_if_owner(KEYS[1], ARGV[1])
