-- Applies a batch of runner events. KEYS[11] the job's record, KEYS[12] its events.
-- ARGV[7] id, ARGV[8] attempt, ARGV[9] first sequence
-- number, ARGV[10] lease (ms), ARGV[11] retry delay (ms), then four values per event:
-- kind, JSON to append ('' for none), exit code ('' for none), and for 'finished' the
-- verdict: '' (succeeded), 'timed_out', 'agent:<why>' (the agent failed; retried only if
-- the profile says so) or 'infra:<why>' (retried while attempts remain).
-- Events the job already has (by sequence number) are skipped.
-- Returns {'ok', state} or {'stop', state} when the attempt is no longer wanted.
local K_JOB = KEYS[11]
local id = ARGV[7]
local attempt = tonumber(ARGV[8])
local f = redis.call('HMGET', K_JOB, F_STATE, F_ATTEMPT, F_RUNNER_SEQ, F_RETRY_ON_FAILURE)
local state = f[1]
if not state then return { 'stop', 'gone' } end
if tonumber(f[2]) ~= attempt or (state ~= 'starting' and state ~= 'running') then
  return { 'stop', state }
end
local seq = tonumber(ARGV[9])
local next_seq = tonumber(f[3] or 0)
local lease_ms = tonumber(ARGV[10])
local delay_ms = tonumber(ARGV[11])
local i = 12
while i + 3 <= #ARGV do
  local kind, payload, code, reason = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  if seq >= next_seq and not TERMINAL[state] and state ~= 'retrying' then
    if kind == 'started' then
      if state == 'starting' then
        redis.call('HSET', K_JOB, F_STARTED_AT, now)
        transition(id, 'starting', 'running', attempt)
        state = 'running'
      end
    elseif kind == 'log' then
      emit(id, payload)
    elseif kind == 'finished' then
      if payload ~= '' then
        emit(id, payload)
        redis.call('HSET', K_JOB, F_RESULT, payload)
      end
      if code ~= '' then redis.call('HSET', K_JOB, F_EXIT_CODE, code) end
      if reason == '' then
        finish(id, state, 'succeeded', attempt, '')
        state = 'succeeded'
      elseif reason == 'timed_out' then
        local limit = redis.call('HGET', K_JOB, F_TIMEOUT_SECS) or '?'
        finish(id, state, 'timed_out', attempt, 'agent exceeded its time limit of ' .. limit .. 's')
        state = 'timed_out'
      elseif string.sub(reason, 1, 6) == 'infra:' then
        state = fail_attempt(id, state, attempt, string.sub(reason, 7), true, delay_ms)
      else
        local why = string.sub(reason, 7)
        if f[4] == '1' then
          state = fail_attempt(id, state, attempt, why, true, delay_ms)
        else
          finish(id, state, 'failed', attempt, why)
          state = 'failed'
        end
      end
    end
  end
  seq = seq + 1
end
if seq > next_seq then redis.call('HSET', K_JOB, F_RUNNER_SEQ, seq) end
if state == 'running' then redis.call('ZADD', K_RUNNING, 'XX', now + lease_ms, id) end
return { 'ok', state }
