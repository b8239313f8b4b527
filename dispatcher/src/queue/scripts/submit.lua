-- Creates a job and puts it on the ready queue, or returns the job an idempotency key
-- already names. ARGV[7] id, ARGV[8] idempotency key ('' for none), ARGV[9] its ttl (ms),
-- ARGV[10..] field/value pairs of the record.
local id = ARGV[7]
local idem = ARGV[8]
if idem ~= '' then
  local idem_key = prefix .. 'idem:' .. idem
  local existing = redis.call('GET', idem_key)
  if existing and redis.call('EXISTS', job_key(existing)) == 1 then
    return { 'existing', existing, redis.call('HGETALL', job_key(existing)) }
  end
  redis.call('SET', idem_key, id, 'PX', tonumber(ARGV[9]))
end
local fields = {}
for i = 10, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', job_key(id), unpack(fields))
local seq = redis.call('INCR', K_SEQ)
redis.call('HSET', job_key(id), 'seq', seq, 'state', 'queued', 'attempt', 1,
  'created_at', now, 'updated_at', now, 'runner_seq', 0)
redis.call('ZADD', K_JOBS, now, id)
enqueue_key(id, redis.call('HGET', job_key(id), 'concurrency_key'), seq)
transition(id, nil, 'queued', 1)
redis.call('XADD', K_QUEUE, '*', 'job', id)
return { 'created', id, redis.call('HGETALL', job_key(id)) }
