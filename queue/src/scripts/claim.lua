-- Decides what claimed queue entries mean, in order. KEYS[11..] the record and the events of
-- each claimed job, in pairs; ARGV[7..] pairs of job id and stream entry id. Returns one
-- reply per pair:
-- {'spawn', attempt, record}: the caller spawns and then records the spawn (which acks);
-- {'wait'}: no slot, the job waits its turn (acked); {'skip'}: nothing to do (acked).
local function decide(id, entry)
  local f = redis.call('HMGET', job_key(id), F_STATE, F_ATTEMPT, F_CONCURRENCY_KEY, F_KEY_LIMIT, F_HANDLE, F_SEQ)
  local state = f[1]
  if state == 'queued' then
    if fits(id, f[3], f[4]) then
      admit(id, f[2], f[3])
      return { 'spawn', tonumber(f[2]), redis.call('HGETALL', job_key(id)) }
    end
    ack(entry)
    redis.call('ZADD', K_WAITING, tonumber(f[6]), id)
    emit(id, { type = 'waiting', attempt = tonumber(f[2]), reason = 'waiting for a free slot' })
    return { 'wait' }
  end
  if state == 'starting' and (f[5] == false or f[5] == '') then
    -- Admitted by a pump, or claimed by a dispatcher that died before recording its spawn.
    return { 'spawn', tonumber(f[2]), redis.call('HGETALL', job_key(id)) }
  end
  ack(entry)
  return { 'skip' }
end

local replies = {}
for i = 7, #ARGV, 2 do
  replies[#replies + 1] = decide(ARGV[i], ARGV[i + 1])
end
-- An admission can make a waiting job the head of its key's queue.
if redis.call('ZCARD', K_WAITING) > 0 then pump() end
return replies
