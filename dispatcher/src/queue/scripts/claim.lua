-- Decides what a claimed queue entry means. ARGV[7] job id, ARGV[8] stream entry id.
-- Returns {'spawn', attempt}: the caller spawns and then records the spawn (which acks);
-- {'wait'}: no slot, the job waits in order (acked); {'skip'}: nothing to do (acked).
local id = ARGV[7]
local entry = ARGV[8]
local f = redis.call('HMGET', job_key(id), 'state', 'attempt', 'concurrency_key', 'key_limit', 'handle')
local state = f[1]
if state == 'queued' then
  if fits(f[3], f[4]) then
    admit(id, f[2], f[3])
    return { 'spawn', tonumber(f[2]) }
  end
  ack(entry)
  local seq = redis.call('HGET', job_key(id), 'seq')
  redis.call('ZADD', K_WAITING, tonumber(seq), id)
  emit(id, { type = 'waiting', attempt = tonumber(f[2]), reason = 'waiting for a free slot' })
  return { 'wait' }
end
if state == 'starting' and (f[5] == false or f[5] == '') then
  -- Admitted by a pump, or claimed by a dispatcher that died before recording its spawn.
  return { 'spawn', tonumber(f[2]) }
end
ack(entry)
return { 'skip' }
