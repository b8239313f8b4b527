-- Records the workload of a spawned attempt and acks its queue entry.
-- ARGV[7] id, ARGV[8] attempt, ARGV[9] handle JSON, ARGV[10] handle identity, ARGV[11] entry,
-- ARGV[12] spawned event JSON, ARGV[13] lease (ms) until the runner must be heard from.
-- Returns 'ok', 'duplicate' (another dispatcher's workload is already recorded: stop ours)
-- or 'stale' (the attempt is over: stop ours).
local id = ARGV[7]
ack(ARGV[11])
local f = redis.call('HMGET', job_key(id), 'state', 'attempt', 'handle_identity')
if f[1] ~= 'starting' or tonumber(f[2]) ~= tonumber(ARGV[8]) then return 'stale' end
if f[3] and f[3] ~= '' then
  if f[3] == ARGV[10] then return 'ok' end
  return 'duplicate'
end
redis.call('HSET', job_key(id), 'handle', ARGV[9], 'handle_identity', ARGV[10], 'spawned_at', now)
-- From now on the lease is the runner's: a runner that dies before reporting is noticed
-- within one lease, not only after the start timeout.
redis.call('ZADD', K_RUNNING, 'XX', now + tonumber(ARGV[13]), id)
emit(id, ARGV[12])
return 'ok'
