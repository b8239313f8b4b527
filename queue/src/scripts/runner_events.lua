-- Applies a batch of runner events. KEYS[11] the job's record, KEYS[12] its events.
-- ARGV[7] id, ARGV[8] attempt, ARGV[9] first sequence
-- number, ARGV[10] lease (ms), ARGV[11] retry delay (ms), ARGV[12] the bytes of output an
-- attempt may record, ARGV[13] the event recorded once in place of the line that passes
-- them (later lines are dropped), then four values per event:
-- kind ('started', 'heartbeat', 'log', 'ask' (a question), 'say', 'finished'), JSON to append
-- ('' for none; a question's is also kept as the record's open question), exit code ('' for
-- none), and for 'finished' the
-- verdict: '' (succeeded), 'timed_out', 'agent:<why>' (the agent failed; retried only if
-- the profile says so) or 'infra:<why>' (retried while attempts remain).
-- Events the job already has (by sequence number) are skipped; a batch that would leave a
-- gap is refused whole (a second writer cannot jump the sequence past the runner's).
-- Returns {'ok', state, state before the batch, the messages in the job's inbox}, {'stop',
-- state} when the attempt is no longer wanted, or {'gap', next sequence number expected}.
local K_JOB = KEYS[11]
local id = ARGV[7]
local attempt = tonumber(ARGV[8])
-- The record's fields a transition reads, then this script's.
local f = redis.call('HMGET', K_JOB, F_STATE, F_PROJECT, F_CREATED_AT, F_ORIGIN, F_RESPONSE_URL,
  F_CONCURRENCY_KEY, F_ATTEMPT, F_RUNNER_SEQ, F_RETRY_ON_FAILURE, F_OUTPUT_BYTES, F_INBOX,
  F_SAID_AT, F_TARGET)
-- The target, read here, spares the job's end (release) a read of its own.
f.target = f[13]
-- A job's progress messages are posted where it came from at most this often (the others
-- are events only): a chatty agent cannot flood a Slack thread or an issue.
local SAY_EVERY_MS = 30000
local state = f[1]
local before = state
if not state then return { 'stop', 'gone' } end
if tonumber(f[7]) ~= attempt or not LIVE[state] then
  return { 'stop', state }
end
local seq = tonumber(ARGV[9])
local next_seq = tonumber(f[8] or 0)
if seq > next_seq then return { 'gap', tostring(next_seq) } end
local lease_ms = tonumber(ARGV[10])
local delay_ms = tonumber(ARGV[11])
local output_limit = tonumber(ARGV[12])
local output_bytes = tonumber(f[10] or 0)
-- The record's fields this batch sets, its transitions' too, written in one HSET at the end.
local set = {}
f.set = set
local recorded_bytes = output_bytes
local i = 14
while i + 3 <= #ARGV do
  local kind, payload, code, reason = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  if seq >= next_seq and not TERMINAL[state] and state ~= 'retrying' then
    if kind == 'started' then
      if state == 'starting' then
        transition(id, 'starting', 'running', attempt, nil, f, { F_STARTED_AT, NOW })
        state = 'running'
      end
    elseif kind == 'log' then
      if output_bytes <= output_limit then
        output_bytes = output_bytes + #payload
        if output_bytes > output_limit then emit_line(id, ARGV[13]) else emit_line(id, payload) end
      end
    elseif kind == 'ask' then
      -- The agent waits for an answer: the attempt keeps its slot, its lease held by the
      -- runner's heartbeats. Questions, like lines, keep the stream near its cap.
      emit_line(id, payload)
      set[#set + 1] = F_QUESTION
      set[#set + 1] = payload
      if state ~= 'waiting_for_input' then
        transition(id, state, 'waiting_for_input', attempt, nil, f)
        state = 'waiting_for_input'
      end
      -- Where the job came from hears the question, with how to answer it.
      if f[4] and f[4] ~= '' then
        redis.call('XADD', K_NOTIFY, '*', O_KIND, 'ask', O_JOB, id, O_ATTEMPT, attempt,
          O_TEXT, cjson.decode(payload).id, O_TRIES, 0)
      end
    elseif kind == 'say' then
      -- A progress message is output: it counts against the attempt's budget.
      if output_bytes <= output_limit then
        output_bytes = output_bytes + #payload
        if output_bytes <= output_limit then
          emit_line(id, payload)
          local said = tonumber(f[12] or 0)
          if f[4] and f[4] ~= '' and now - said >= SAY_EVERY_MS then
            redis.call('XADD', K_NOTIFY, '*', O_KIND, 'say', O_JOB, id, O_ATTEMPT, attempt,
              O_TEXT, cjson.decode(payload).text, O_TRIES, 0)
            f[12] = now
            set[#set + 1] = F_SAID_AT
            set[#set + 1] = now
          end
        end
      end
    elseif kind == 'finished' then
      if payload ~= '' then
        emit(id, payload)
        set[#set + 1] = F_RESULT
        set[#set + 1] = payload
      end
      if code ~= '' then
        set[#set + 1] = F_EXIT_CODE
        set[#set + 1] = code
      end
      if reason == '' then
        finish(id, state, 'succeeded', attempt, '', f)
        state = 'succeeded'
      elseif reason == 'timed_out' then
        local limit = redis.call('HGET', K_JOB, F_TIMEOUT_SECS) or '?'
        finish(id, state, 'timed_out', attempt, 'agent exceeded its time limit of ' .. limit .. 's', f)
        state = 'timed_out'
      elseif string.sub(reason, 1, 6) == 'infra:' then
        state = fail_attempt(id, state, attempt, string.sub(reason, 7), true, delay_ms, f)
      else
        local why = string.sub(reason, 7)
        if f[9] == '1' then
          state = fail_attempt(id, state, attempt, why, true, delay_ms, f)
        else
          finish(id, state, 'failed', attempt, why, f)
          state = 'failed'
        end
      end
    end
  end
  seq = seq + 1
end
-- A retried job's next attempt counts from nothing (fail_attempt reset its counters).
if state ~= 'retrying' then
  if seq > next_seq then
    set[#set + 1] = F_RUNNER_SEQ
    set[#set + 1] = seq
  end
  if output_bytes ~= recorded_bytes then
    set[#set + 1] = F_OUTPUT_BYTES
    set[#set + 1] = output_bytes
  end
end
if #set > 0 then redis.call('HSET', K_JOB, unpack(set)) end
if state == 'running' or state == 'waiting_for_input' then
  redis.call('ZADD', K_RUNNING, 'XX', now + lease_ms, id)
end
return { 'ok', state, before, f[11] or '0' }
