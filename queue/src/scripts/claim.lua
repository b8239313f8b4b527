-- Decides what claimed queue entries mean, in order. KEYS[11..] the record and the events of
-- each claimed job, in pairs; ARGV[7..] pairs of job id and stream entry id. Returns one
-- reply per pair:
-- {'spawn', attempt, record}: the caller spawns and then records the spawn (which acks);
-- {'wait'}: no slot, the job waits its turn (acked); {'skip'}: nothing to do (acked).
-- The admitted jobs are counted once per call, then by each admission here (a queued job
-- holds no slot, so admitting it takes one more).
local running = redis.call('ZCARD', K_RUNNING)
local function decide(id, entry)
  local f = redis.call('HMGET', job_key(id), F_STATE, F_PROJECT, F_CREATED_AT, F_ORIGIN,
    F_RESPONSE_URL, F_CONCURRENCY_KEY, F_ATTEMPT, F_KEY_LIMIT, F_HANDLE, F_SEQ)
  local state, attempt = f[1], f[7]
  if state == 'queued' then
    if fits(id, f[6], f[8], running) then
      admit(id, attempt, f[6], f)
      running = running + 1
      return { 'spawn', tonumber(attempt), redis.call('HGETALL', job_key(id)) }
    end
    ack(entry)
    park(id, f[10], attempt)
    return { 'wait' }
  end
  if state == 'starting' and (f[9] == false or f[9] == '') then
    -- Admitted by a pump, or claimed by a dispatcher that died before recording its spawn.
    return { 'spawn', tonumber(attempt), redis.call('HGETALL', job_key(id)) }
  end
  ack(entry)
  return { 'skip' }
end

local replies = {}
for i = 7, #ARGV, 2 do
  replies[#replies + 1] = decide(ARGV[i], ARGV[i + 1])
end
-- An admission can make a waiting job the head of its key's queue.
if redis.call('ZCARD', K_WAITING) > 0 then PUMP = true end
return replies
