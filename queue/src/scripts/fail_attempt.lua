-- An attempt failed outside the agent (spawn error, lost runner, workload gone).
-- KEYS[11] the job's record, KEYS[12] its events.
-- ARGV[7] id, ARGV[8] attempt, ARGV[9] reason, ARGV[10] '1' if retryable,
-- ARGV[11] retry delay (ms), ARGV[12] queue entry to ack ('' for none),
-- ARGV[13] '1' to act only if the job's lease has expired.
-- Returns 'retrying', 'failed' or 'stale'.
local id = ARGV[7]
ack(ARGV[12])
local f = redis.call('HMGET', KEYS[11], F_STATE, F_ATTEMPT)
if not LIVE[f[1]] then return 'stale' end
if tonumber(f[2]) ~= tonumber(ARGV[8]) then return 'stale' end
if ARGV[13] == '1' then
  local deadline = redis.call('ZSCORE', K_RUNNING, id)
  if deadline and tonumber(deadline) > now then return 'stale' end
end
return fail_attempt(id, f[1], f[2], ARGV[9], ARGV[10] == '1', tonumber(ARGV[11]))
