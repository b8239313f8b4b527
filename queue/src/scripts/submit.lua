-- Creates a job and puts it on the ready queue (in the waiting set when no slot is free for
-- it), unless one it should be answered with exists. KEYS[11] the job's record, KEYS[12]
-- its events, KEYS[13] the idempotency key's key, KEYS[14] the delivery's, KEYS[15] the
-- ticket's, KEYS[17] the Slack thread's (each of '' when there is none), KEYS[16] the hash
-- of jobs' projects.
-- ARGV[7] id, ARGV[8] idempotency key ('' for none), ARGV[9] its ttl (ms), ARGV[10]
-- delivery ('source:delivery-id', '' for none), ARGV[11] its ttl (ms), ARGV[12] exclusive
-- key (a ticket that may have one unfinished job, '' for none), ARGV[13] the origin (JSON)
-- to tell "already running" when the ticket's job is unfinished ('' for none: the caller
-- answers in its response), ARGV[14] the job this one follows ('' for the finished job the
-- ticket's or the thread's key names, if any), ARGV[15] '1' when the job was started in a
-- Slack thread (KEYS[17]), ARGV[16..] field/value pairs of the record (none empty).
-- Returns {verdict, id, record}: 'created' (the record's fields the script set: the caller
-- sent the others); 'existing' (the idempotency key's job);
-- 'duplicate' (the job this delivery made or was answered with, record empty if it is
-- gone); 'running' (the ticket's unfinished job).
local K_JOB, K_IDEM, K_DEDUP, K_ACTIVE, K_THREAD = KEYS[11], KEYS[13], KEYS[14], KEYS[15], KEYS[17]
local id = ARGV[7]
local idem = ARGV[8]
local delivery = ARGV[10]
local exclusive = ARGV[12]
local follows = ARGV[14]
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
    if follows == '' and state then follows = active end
  end
  redis.call('SET', K_ACTIVE, id, 'PX', retention_ms)
end
if ARGV[15] ~= '' then
  -- The thread's latest job, once it has finished, is the one a new job there continues.
  local before = follows == '' and redis.call('GET', K_THREAD)
  if before and TERMINAL[redis.call('HGET', job_key(before), F_STATE) or ''] then
    follows = before
  end
  redis.call('SET', K_THREAD, id, 'PX', retention_ms)
end
local seq = redis.call('INCR', K_SEQ)
-- The fields the script sets, which the caller adds to those it sent for the record.
local set = { F_SEQ, seq, F_ATTEMPT, 1, F_CREATED_AT, NOW, F_RUNNER_SEQ, 0 }
if follows ~= '' then
  -- A follow-up: the previous job as it ended (its summary from its result), the chain's
  -- first job (whose branch the chain works on), and the link back from the previous one.
  local p = redis.call('HMGET', job_key(follows), F_STATE, F_RESULT, F_REASON, F_TASK, F_CHAIN)
  if p[1] then
    local summary
    if p[2] then
      local ok, result = pcall(cjson.decode, p[2])
      if ok and type(result) == 'table' and type(result.summary) == 'string' then
        summary = result.summary
      end
    end
    local previous = { job_id = follows, state = p[1], summary = summary, task = p[4] or '' }
    if p[3] and p[3] ~= '' then previous.reason = p[3] end
    set[#set + 1] = F_FOLLOWS
    set[#set + 1] = cjson.encode(previous)
    set[#set + 1] = F_CHAIN
    set[#set + 1] = p[5] or follows
    redis.call('HSET', job_key(follows), F_FOLLOWED_BY, id)
  end
end
local fields = { unpack(set) }
local given = {}
for i = 16, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
  given[ARGV[i]] = ARGV[i + 1]
end
index_put(K_JOBS, id, NOW)
index_project(KEYS[16], id, given[F_PROJECT], NOW)
-- The record is written with the transition's own fields, in one HSET.
transition(id, nil, 'queued', 1, nil,
  { false, given[F_PROJECT], NOW, given[F_ORIGIN], given[F_RESPONSE_URL],
    given[F_CONCURRENCY_KEY] }, fields)
enqueue_key(id, given[F_CONCURRENCY_KEY], seq)
if fits(id, given[F_CONCURRENCY_KEY], given[F_KEY_LIMIT], admitted_count()) then
  redis.call('XADD', K_QUEUE, '*', S_JOB, id)
else
  -- Every slot is taken (or its key's): the job waits its turn now, as a claim of its queue
  -- entry would have decided, and a slot freed admits it (pump).
  park(id, seq, 1)
end
remember(id)
set[#set + 1] = F_STATE
set[#set + 1] = 'queued'
set[#set + 1] = F_UPDATED_AT
set[#set + 1] = NOW
return { 'created', id, set }
