-- Creates a job and puts it on the ready queue, unless one it should be answered with
-- exists. KEYS[11] the job's record, KEYS[12] its events, KEYS[13] the idempotency key's
-- key, KEYS[14] the delivery's, KEYS[15] the ticket's (each of '' when there is none),
-- KEYS[16] the hash of jobs' projects.
-- ARGV[7] id, ARGV[8] idempotency key ('' for none), ARGV[9] its ttl (ms), ARGV[10]
-- delivery ('source:delivery-id', '' for none), ARGV[11] its ttl (ms), ARGV[12] exclusive
-- key (a ticket that may have one unfinished job, '' for none), ARGV[13] the origin (JSON)
-- to tell "already running" when the ticket's job is unfinished ('' for none: the caller
-- answers in its response), ARGV[14..] field/value pairs of the record.
-- Returns {verdict, id, record}: 'created' (the record's fields the script set: the caller
-- sent the others); 'existing' (the idempotency key's job);
-- 'duplicate' (the job this delivery made or was answered with, record empty if it is
-- gone); 'running' (the ticket's unfinished job).
local K_JOB, K_IDEM, K_DEDUP, K_ACTIVE = KEYS[11], KEYS[13], KEYS[14], KEYS[15]
local id = ARGV[7]
local idem = ARGV[8]
local delivery = ARGV[10]
local exclusive = ARGV[12]
if delivery ~= '' then
  local seen = redis.call('GET', K_DEDUP)
  if seen then return { 'duplicate', seen, redis.call('HGETALL', job_key(seen)) } end
end
local function remember(job)
  if delivery ~= '' then
    redis.call('SET', K_DEDUP, job, 'PX', tonumber(ARGV[11]))
  end
end
if idem ~= '' then
  local existing = redis.call('GET', K_IDEM)
  if existing and redis.call('EXISTS', job_key(existing)) == 1 then
    remember(existing)
    return { 'existing', existing, redis.call('HGETALL', job_key(existing)) }
  end
  redis.call('SET', K_IDEM, id, 'PX', tonumber(ARGV[9]))
end
if exclusive ~= '' then
  local active = redis.call('GET', K_ACTIVE)
  if active then
    local state = redis.call('HGET', job_key(active), F_STATE)
    if state and not TERMINAL[state] then
      remember(active)
      if ARGV[13] ~= '' then
        redis.call('XADD', K_NOTIFY, '*', O_KIND, 'running', O_JOB, active, O_ORIGIN, ARGV[13], O_TRIES, 0)
      end
      return { 'running', active, redis.call('HGETALL', job_key(active)) }
    end
  end
  redis.call('SET', K_ACTIVE, id, 'PX', retention_ms)
end
local seq = redis.call('INCR', K_SEQ)
-- The fields the script sets, which the caller adds to those it sent for the record.
local set = { F_SEQ, seq, F_ATTEMPT, 1, F_CREATED_AT, NOW, F_RUNNER_SEQ, 0 }
local fields = { unpack(set) }
local given = {}
for i = 14, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
  given[ARGV[i]] = ARGV[i + 1]
end
redis.call('ZADD', K_JOBS, NOW, id)
index_project(KEYS[16], id, given[F_PROJECT], NOW)
-- The record is written with the transition's own fields, in one HSET.
transition(id, nil, 'queued', 1, nil,
  { false, given[F_PROJECT], NOW, given[F_ORIGIN], given[F_RESPONSE_URL],
    given[F_CONCURRENCY_KEY] }, fields)
enqueue_key(id, given[F_CONCURRENCY_KEY], seq)
redis.call('XADD', K_QUEUE, '*', S_JOB, id)
remember(id)
set[#set + 1] = F_STATE
set[#set + 1] = 'queued'
set[#set + 1] = F_UPDATED_AT
set[#set + 1] = NOW
return { 'created', id, set }
