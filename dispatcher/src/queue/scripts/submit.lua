-- Creates a job and puts it on the ready queue, unless one it should be answered with
-- exists. ARGV[7] id, ARGV[8] idempotency key ('' for none), ARGV[9] its ttl (ms),
-- ARGV[10] delivery ('source:delivery-id', '' for none), ARGV[11] its ttl (ms),
-- ARGV[12] exclusive key (a ticket that may have one unfinished job, '' for none),
-- ARGV[13] the origin (JSON) to tell "already running" when the ticket's job is unfinished
-- ('' for none: the caller answers in its response), ARGV[14..] field/value pairs of the
-- record.
-- Returns {verdict, id, record}: 'created'; 'existing' (the idempotency key's job);
-- 'duplicate' (the job this delivery made or was answered with, record empty if it is
-- gone); 'running' (the ticket's unfinished job).
local id = ARGV[7]
local idem = ARGV[8]
local delivery = ARGV[10]
local exclusive = ARGV[12]
if delivery ~= '' then
  local seen = redis.call('GET', prefix .. 'dedup:' .. delivery)
  if seen then return { 'duplicate', seen, redis.call('HGETALL', job_key(seen)) } end
end
local function remember(job)
  if delivery ~= '' then
    redis.call('SET', prefix .. 'dedup:' .. delivery, job, 'PX', tonumber(ARGV[11]))
  end
end
if idem ~= '' then
  local idem_key = prefix .. 'idem:' .. idem
  local existing = redis.call('GET', idem_key)
  if existing and redis.call('EXISTS', job_key(existing)) == 1 then
    remember(existing)
    return { 'existing', existing, redis.call('HGETALL', job_key(existing)) }
  end
  redis.call('SET', idem_key, id, 'PX', tonumber(ARGV[9]))
end
if exclusive ~= '' then
  local active_key = prefix .. 'active:' .. exclusive
  local active = redis.call('GET', active_key)
  if active then
    local state = redis.call('HGET', job_key(active), 'state')
    if state and not TERMINAL[state] then
      remember(active)
      if ARGV[13] ~= '' then
        redis.call('XADD', K_NOTIFY, '*', 'kind', 'running', 'job', active, 'origin', ARGV[13], 'tries', 0)
      end
      return { 'running', active, redis.call('HGETALL', job_key(active)) }
    end
  end
  redis.call('SET', active_key, id, 'PX', retention_ms)
end
local fields = {}
for i = 14, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', job_key(id), unpack(fields))
local seq = redis.call('INCR', K_SEQ)
redis.call('HSET', job_key(id), 'seq', seq, 'state', 'queued', 'attempt', 1,
  'created_at', now, 'updated_at', now, 'runner_seq', 0)
redis.call('ZADD', K_JOBS, now, id)
enqueue_key(id, redis.call('HGET', job_key(id), 'concurrency_key'), seq)
transition(id, nil, 'queued', 1)
redis.call('XADD', K_QUEUE, '*', 'job', id)
remember(id)
return { 'created', id, redis.call('HGETALL', job_key(id)) }
