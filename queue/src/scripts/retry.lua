-- Runs a finished job again as a new attempt with a fresh retry budget.
-- KEYS[11] the job's record, KEYS[12] its events. ARGV[7] id, ARGV[8] attempts allowed.
-- Returns {'queued', attempt}, {'active', state} or {'missing'}.
local K_JOB, K_EVENTS = KEYS[11], KEYS[12]
local id = ARGV[7]
local f = redis.call('HMGET', K_JOB, F_STATE, F_ATTEMPT)
local state = f[1]
if not state then return { 'missing' } end
if not TERMINAL[state] then return { 'active', state } end
local attempt = tonumber(f[2]) + 1
redis.call('PERSIST', K_JOB)
redis.call('PERSIST', K_EVENTS)
redis.call('HSET', K_JOB, F_ATTEMPT, attempt, F_MAX_ATTEMPTS, attempt + tonumber(ARGV[8]) - 1,
  F_HANDLE, '', F_HANDLE_IDENTITY, '', F_TARGET, '', F_REASON, '', F_FINISHED_AT, '', F_RESULT, '', F_EXIT_CODE, '',
  F_RUNNER_SEQ, 0, F_OUTPUT_BYTES, 0)
redis.call('HDEL', K_JOB, F_STARTED_AT, F_SPAWNED_AT, F_ADMITTED_AT)
transition(id, state, 'queued', attempt, 'retry requested')
make_ready(id)
return { 'queued', attempt }
