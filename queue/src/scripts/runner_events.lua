-- Applies a batch of runner events. KEYS[11] the job's record, KEYS[12] its events.
-- ARGV[7] id, ARGV[8] attempt, ARGV[9] first sequence
-- number, ARGV[10] lease (ms), ARGV[11] retry delay (ms), ARGV[12] the bytes of output an
-- attempt may record, ARGV[13] the event recorded once in place of the line that passes
-- them (later lines are dropped), then four values per event:
-- kind, JSON to append ('' for none), exit code ('' for none), and for 'finished' the
-- verdict: '' (succeeded), 'timed_out', 'agent:<why>' (the agent failed; retried only if
-- the profile says so) or 'infra:<why>' (retried while attempts remain).
-- Events the job already has (by sequence number) are skipped; a batch that would leave a
-- gap is refused whole (a second writer cannot jump the sequence past the runner's).
-- Returns {'ok', state, state before the batch}, {'stop', state} when the attempt is no
-- longer wanted, or {'gap', next sequence number expected}.
local K_JOB = KEYS[11]
local id = ARGV[7]
local attempt = tonumber(ARGV[8])
local f = redis.call('HMGET', K_JOB, F_STATE, F_ATTEMPT, F_RUNNER_SEQ, F_RETRY_ON_FAILURE,
  F_OUTPUT_BYTES)
local state = f[1]
if not state then return { 'stop', 'gone' } end
if tonumber(f[2]) ~= attempt or (state ~= 'starting' and state ~= 'running') then
  return { 'stop', state }
end
local seq = tonumber(ARGV[9])
local next_seq = tonumber(f[3] or 0)
if seq > next_seq then return { 'gap', tostring(next_seq) } end
local lease_ms = tonumber(ARGV[10])
local delay_ms = tonumber(ARGV[11])
local output_limit = tonumber(ARGV[12])
local output_bytes = tonumber(f[5] or 0)
local recorded_bytes = output_bytes
local i = 14
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
      if output_bytes <= output_limit then
        output_bytes = output_bytes + #payload
        if output_bytes > output_limit then emit(id, ARGV[13]) else emit(id, payload) end
      end
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
if output_bytes ~= recorded_bytes then redis.call('HSET', K_JOB, F_OUTPUT_BYTES, output_bytes) end
if state == 'running' then redis.call('ZADD', K_RUNNING, 'XX', now + lease_ms, id) end
return { 'ok', state, f[1] }
