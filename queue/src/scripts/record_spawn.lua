-- Records the workload of a spawned attempt and acks its queue entry.
-- KEYS[11] the job's record, KEYS[12] its events.
-- ARGV[7] id, ARGV[8] attempt, ARGV[9] handle JSON, ARGV[10] handle identity, ARGV[11] entry,
-- ARGV[12] spawned event JSON, ARGV[13] lease (ms) until the runner must be heard from,
-- ARGV[14] the spawner target it runs on.
-- Returns 'ok', 'duplicate' (another dispatcher's workload is already recorded: stop ours)
-- or 'stale' (the attempt was superseded or cancelled: stop ours).
-- A runner may report before its spawn is recorded (a slow engine or API server returns
-- after the workload has started): an attempt already running, or already ended by its
-- runner, still gets its workload recorded and keeps it.
local K_JOB = KEYS[11]
local id = ARGV[7]
ack(ARGV[11])
local f = redis.call('HMGET', K_JOB, F_STATE, F_ATTEMPT, F_HANDLE_IDENTITY, F_TARGET)
local state = f[1]
if tonumber(f[2]) ~= tonumber(ARGV[8]) then return 'stale' end
if not (LIVE[state] or state == 'succeeded'
    or state == 'failed' or state == 'timed_out') then
  return 'stale'
end
if f[3] and f[3] ~= '' then
  if f[3] == ARGV[10] then return 'ok' end
  return 'duplicate'
end
local set = { F_HANDLE, ARGV[9], F_HANDLE_IDENTITY, ARGV[10], F_SPAWNED_AT, NOW }
-- A target chosen without taking a slot (a job's only route, with no cap: see
-- reserve_target) is recorded, and counted while the attempt is active, from here.
if ARGV[14] ~= '' and (not f[4] or f[4] == '') then
  set[7], set[8] = F_TARGET, ARGV[14]
  if LIVE[state] then redis.call('SADD', target_key(ARGV[14]), id) end
end
redis.call('HSET', K_JOB, unpack(set))
if state == 'starting' then
  -- From now on the lease is the runner's: a runner that dies before reporting is noticed
  -- within one lease, not only after the start timeout.
  redis.call('ZADD', K_RUNNING, 'XX', now + tonumber(ARGV[13]), id)
end
emit(id, ARGV[12])
return 'ok'
