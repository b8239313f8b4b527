-- Runs a finished job again as a new attempt with a fresh retry budget.
-- ARGV[7] id, ARGV[8] attempts allowed.
-- Returns {'queued', attempt}, {'active', state} or {'missing'}.
local id = ARGV[7]
local f = redis.call('HMGET', job_key(id), 'state', 'attempt')
local state = f[1]
if not state then return { 'missing' } end
if not TERMINAL[state] then return { 'active', state } end
local attempt = tonumber(f[2]) + 1
redis.call('PERSIST', job_key(id))
redis.call('PERSIST', events_key(id))
redis.call('HSET', job_key(id), 'attempt', attempt, 'max_attempts', attempt + tonumber(ARGV[8]) - 1,
  'handle', '', 'handle_identity', '', 'reason', '', 'finished_at', '', 'result', '', 'exit_code', '', 'runner_seq', 0)
redis.call('HDEL', job_key(id), 'started_at', 'spawned_at', 'admitted_at')
transition(id, state, 'queued', attempt, 'retry requested')
local k = redis.call('HMGET', job_key(id), 'concurrency_key', 'seq')
    enqueue_key(id, k[1], k[2])
    redis.call('XADD', K_QUEUE, '*', 'job', id)
return { 'queued', attempt }
