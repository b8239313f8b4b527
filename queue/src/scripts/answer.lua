-- Answers a job's open question, or lets it expire at its deadline.
-- KEYS[11] the job's record, KEYS[12] its events.
-- ARGV[7] id, ARGV[8] the question's id ('' for whichever is open), ARGV[9] the answer,
-- ARGV[10] who answered, ARGV[11] 'answer', or 'expire' (at the deadline the question takes
-- its default; one without fails the job).
-- Returns {'answered', answer JSON}; {'closed', state, the last answer JSON or ''} when no
-- such question is open (answered before, or the job moved on); {'missing'}; {'not_due'}
-- (expire before the deadline); {'failed', handle JSON or ''} (expired with no default).
local K_JOB = KEYS[11]
local id = ARGV[7]
local f = redis.call('HMGET', K_JOB, F_STATE, F_PROJECT, F_CREATED_AT, F_ORIGIN, F_RESPONSE_URL,
  F_CONCURRENCY_KEY, F_ATTEMPT, F_QUESTION, F_ANSWER, F_HANDLE)
local state = f[1]
if not state then return { 'missing' } end
local rec = { f[1], f[2], f[3], f[4], f[5], f[6] }
local q = nil
if state == 'waiting_for_input' and f[8] then q = cjson.decode(f[8]) end
if not q or (ARGV[8] ~= '' and q.id ~= ARGV[8]) then return { 'closed', state, f[9] or '' } end
local text, by, defaulted = ARGV[9], ARGV[10], false
if ARGV[11] == 'expire' then
  if tonumber(q.deadline) > now then return { 'not_due' } end
  if type(q.default) ~= 'string' then
    local asked = q.text
    if #asked > 200 then asked = string.sub(asked, 1, 200) .. '…' end
    local why = 'nobody answered the question "' .. asked .. '" within ' .. tostring(q.timeout_secs)
      .. 's, and it has no default'
    finish(id, state, 'failed', f[7], why, rec)
    return { 'failed', f[10] or '' }
  end
  text, by, defaulted = q.default, '', true
end
local answer = cjson.encode({ question = q.id, text = text, by = by, defaulted = defaulted, at = now })
redis.call('HSET', K_JOB, F_ANSWER, answer)
emit_line(id, '{"type":"answer","attempt":' .. tonumber(f[7]) .. ',' .. string.sub(answer, 2))
transition(id, state, 'running', f[7], nil, rec)
return { 'answered', answer }
