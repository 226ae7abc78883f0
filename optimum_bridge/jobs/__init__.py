"""Jobs: their records and states, batches, shared reads, leases, the due set, retries, and the
executor of one attempt.
"""
