-- Shared logic of every agentsmith script, run after the generated prelude (scripts.rs),
-- which names the common arguments (prefix, now, events_max, retention_ms, max_running,
-- start_lease_ms), the key builders (job_key, events_key, concurrency_key, key_queue,
-- idem_key, dedup_key, active_key, state_jobs_key, project_jobs_key,
-- project_state_jobs_key) and the consumer groups. The fixed keys (K_*) and every
-- field name (F_* of a job record, O_* of an outbox entry, S_* of a stream entry, C_* of the
-- counters) are written by name here and replaced by the loader with KEYS[n] and the quoted
-- field. A script's own keys follow as KEYS[11..] and its arguments as ARGV[7..].
local FEED_MAX = 10000

local TERMINAL = { succeeded = true, failed = true, cancelled = true, timed_out = true }
-- The states of an admitted attempt: it holds a slot and a lease, and its runner may report.
local LIVE = { starting = true, running = true, waiting_for_input = true }
-- The states a job's requester hears about (queued only when it is new or asked again,
-- not when an infrastructure retry puts it back).
local REPLY_STATES = { queued = true, running = true, succeeded = true, failed = true, cancelled = true, timed_out = true }

-- The counters' changes of this call, written once each when the call ends (flush_counts,
-- run by every script after its items): a transition moves two or three of them.
local COUNTS = {}
local function count(field, delta) COUNTS[field] = (COUNTS[field] or 0) + delta end
local function flush_counts()
  for field, delta in pairs(COUNTS) do
    if delta ~= 0 then redis.call('HINCRBY', K_STATS, field, delta) end
  end
  COUNTS = {}
end

-- Appends an event (a table, or an already encoded JSON string) to the job's stream.
-- Returns the encoded event. Only an attempt's output can make a stream long (a job has a
-- few state events per attempt, and a bounded number of attempts), so only output lines
-- trim it (emit_line), which spares the other events the cost of checking.
local function emit(id, event)
  local encoded = event
  if type(event) == 'table' then
    event.at = now
    encoded = cjson.encode(event)
  end
  redis.call('XADD', events_key(id), '*', S_EVENT, encoded)
  return encoded
end

-- Appends a line of output (encoded) to the job's stream, keeping it near events_max long.
local function emit_line(id, encoded)
  redis.call('XADD', events_key(id), 'MAXLEN', '~', events_max, '*', S_EVENT, encoded)
end

-- Whether this call added to the feed: it is trimmed once, when the call ends.
local FED = false
local function trim_feed()
  if FED then redis.call('XTRIM', K_FEED, 'MAXLEN', '~', FEED_MAX) end
end

-- The list indexes' changes of this call (sorted sets no script reads while it changes them:
-- K_JOBS, the state and project indexes), written when the call ends (flush_indexes): one
-- ZADD and one ZREM per index for all the call's jobs, instead of one per job and state. Per
-- index and job the last change counts (a score, or false to remove), as it would have.
local INDEXES, INDEX_KEYS = {}, {}
local function index_put(key, id, score)
  local index = INDEXES[key]
  if not index then
    index = {}
    INDEXES[key] = index
    INDEX_KEYS[#INDEX_KEYS + 1] = key
  end
  index[id] = score
end
local function flush_indexes()
  for _, key in ipairs(INDEX_KEYS) do
    local add, remove = {}, {}
    for id, score in pairs(INDEXES[key]) do
      if score then
        add[#add + 1] = score
        add[#add + 1] = id
      else
        remove[#remove + 1] = id
      end
    end
    if #add > 0 then redis.call('ZADD', key, unpack(add)) end
    if #remove > 0 then redis.call('ZREM', key, unpack(remove)) end
  end
  INDEXES, INDEX_KEYS = {}, {}
end

-- Moves a job into the list indexes of state `to` (every job's, and its project's) and out
-- of those of the state `from` its record holds, scored by creation time as K_JOBS is. Every
-- change of state passes here (by transition), so the indexes change with the record.
local function index_state(id, from, to, project, created)
  local in_project = project and project ~= ''
  if from and from ~= to then
    index_put(state_jobs_key(from), id, false)
    if in_project then index_put(project_state_jobs_key(project, from), id, false) end
  end
  index_put(state_jobs_key(to), id, created)
  if in_project then index_put(project_state_jobs_key(project, to), id, created) end
end

-- Puts a job of a project in its project's list index, and notes its project in `project_of`
-- (the hash of jobs' projects), where the sweep finds it after the record has expired.
local function index_project(project_of, id, project, created)
  if project and project ~= '' then
    index_put(project_jobs_key(project), id, created)
    redis.call('HSET', project_of, id, project)
  end
end

-- The fields of a record a transition and the end of a job read. A script that reads its
-- job's record anyway asks for these six first, in this order, and hands the answer on as
-- `rec`.
local function record_of(id)
  return redis.call('HMGET', job_key(id), F_STATE, F_PROJECT, F_CREATED_AT, F_ORIGIN,
    F_RESPONSE_URL, F_CONCURRENCY_KEY)
end

-- Whether a job left a slot this call: the waiting jobs are admitted once, when the call
-- ends (see scripts.rs), not after each job.
local PUMP = false

-- Moves a job between states: the record (with the field/value pairs of `extra`, if any),
-- the list indexes, the counters and a state event. `rec` is the job's record_of (read here
-- when nil); its state becomes `to`. When `rec.set` is a table, the record's fields are
-- added to it, for its caller to write with its own in one `HSET` before it returns (a
-- later pair of a field overrides an earlier one there); else they are written here.
local function transition(id, from, to, attempt, reason, rec, extra)
  local f = rec or record_of(id)
  index_state(id, f[1], to, f[2], f[3] or NOW)
  local set = f.set or {}
  local n = #set
  set[n + 1], set[n + 2], set[n + 3], set[n + 4] = F_STATE, to, F_UPDATED_AT, NOW
  if extra then
    for i = 1, #extra do set[n + 4 + i] = extra[i] end
  end
  if not f.set then redis.call('HSET', job_key(id), unpack(set)) end
  f[1] = to
  count(C_ENTERED .. to, 1)
  if from and not TERMINAL[from] then count(C_CURRENT .. from, -1) end
  if not TERMINAL[to] then count(C_CURRENT .. to, 1) end
  -- The state event, written out (a state is one of ours and the attempt a number; only the
  -- reason needs encoding), and the feed's entry: the same with the job's id in front.
  local tail = '"type":"state","state":"' .. to .. '","attempt":' .. tonumber(attempt)
    .. ',"at":' .. NOW
  if reason and reason ~= '' then tail = tail .. ',"reason":' .. cjson.encode(reason) end
  tail = tail .. '}'
  emit(id, '{' .. tail)
  redis.call('XADD', K_FEED, '*', S_EVENT, '{"job_id":' .. cjson.encode(id) .. ',' .. tail)
  FED = true
  -- A job that came from a webhook gets a reply in the outbox, in the same transaction as
  -- the change it tells of, so no reply is lost and none is sent for a change not made.
  -- (An answered question puts the job back to running: its requester knows it runs.)
  if REPLY_STATES[to] and (to ~= 'queued' or not from or TERMINAL[from])
      and from ~= 'waiting_for_input' then
    local origin = f[4]
    -- A slash command's "queued" was said in the command's own response.
    local answered = to == 'queued' and f[5] and f[5] ~= ''
    if origin and origin ~= '' and not answered then
      redis.call('XADD', K_NOTIFY, '*', O_KIND, 'state', O_JOB, id, O_STATE, to, O_ATTEMPT, attempt, O_TRIES, 0)
    end
  end
end

-- Whether a job may take a slot now: a global slot is free and, for a job with a
-- concurrency key, a slot of its key is free and no earlier job of that key is queued
-- (the key's queue, scored by submission order, keeps jobs of one key in order even
-- when several dispatchers claim them). `running`, when given, is how many jobs hold a
-- slot (else it is read).
local function fits(id, ckey, limit, running)
  if max_running - (running or redis.call('ZCARD', K_RUNNING)) <= 0 then return false end
  if ckey and ckey ~= '' then
    if redis.call('SCARD', concurrency_key(ckey)) >= tonumber(limit or 1) then return false end
    local head = redis.call('ZRANGE', key_queue(ckey), 0, 0)[1]
    if head and head ~= id then return false end
  end
  return true
end

-- How many jobs hold a slot, read once per call: for a script that admits none (submit).
local ADMITTED
local function admitted_count()
  ADMITTED = ADMITTED or redis.call('ZCARD', K_RUNNING)
  return ADMITTED
end

-- A queued job that may not take a slot now waits its turn in the waiting set, by submission
-- order (`seq`); a slot freed admits the oldest that fits (pump).
local function park(id, seq, attempt)
  redis.call('ZADD', K_WAITING, seq, id)
  emit(id, '{"type":"waiting","attempt":' .. tonumber(attempt)
    .. ',"reason":"waiting for a free slot","at":' .. NOW .. '}')
end

-- Puts a queued job with a concurrency key in its key's queue (by submission order).
local function enqueue_key(id, ckey, seq)
  if ckey and ckey ~= '' then redis.call('ZADD', key_queue(ckey), tonumber(seq), id) end
end

-- Puts a queued job on the ready stream, in its key's queue first.
local function make_ready(id)
  local k = redis.call('HMGET', job_key(id), F_CONCURRENCY_KEY, F_SEQ)
  enqueue_key(id, k[1], k[2])
  redis.call('XADD', K_QUEUE, '*', S_JOB, id)
end

-- Admits a queued job: it takes a slot and becomes starting.
local function admit(id, attempt, ckey, rec)
  redis.call('ZADD', K_RUNNING, now + start_lease_ms, id)
  if ckey and ckey ~= '' then
    redis.call('SADD', concurrency_key(ckey), id)
    redis.call('ZREM', key_queue(ckey), id)
  end
  transition(id, 'queued', 'starting', attempt, nil, rec,
    { F_HANDLE, '', F_HANDLE_IDENTITY, '', F_TARGET, '', F_ADMITTED_AT, NOW })
end

-- Frees a job's slot, its concurrency key's and its target's. `rec` (a record_of, or nil)
-- gives the concurrency key, and the target too when its reader set `rec.target` (the
-- field's value, false when absent); else they are read here.
local function release(id, rec)
  redis.call('ZREM', K_RUNNING, id)
  PUMP = true
  local ckey, target
  if rec and rec.target ~= nil then
    ckey, target = rec[6], rec.target
  else
    local k = redis.call('HMGET', job_key(id), F_CONCURRENCY_KEY, F_TARGET)
    ckey, target = k[1], k[2]
    if rec then ckey = rec[6] end
  end
  if ckey and ckey ~= '' then
    redis.call('SREM', concurrency_key(ckey), id)
    redis.call('ZREM', key_queue(ckey), id)
  end
  -- The target keeps its name in the record (where the attempt ran); its slot is freed.
  if target and target ~= '' then redis.call('SREM', target_key(target), id) end
end

-- Admits waiting jobs, oldest first, while slots are free; each admitted job gets a queue
-- entry so a scheduler spawns it.
local function pump()
  local free = max_running - redis.call('ZCARD', K_RUNNING)
  if free <= 0 then return end
  local waiters = redis.call('ZRANGE', K_WAITING, 0, 199)
  for _, id in ipairs(waiters) do
    if free <= 0 then break end
    local f = redis.call('HMGET', job_key(id), F_STATE, F_PROJECT, F_CREATED_AT, F_ORIGIN,
      F_RESPONSE_URL, F_CONCURRENCY_KEY, F_ATTEMPT, F_KEY_LIMIT)
    if f[1] ~= 'queued' then
      redis.call('ZREM', K_WAITING, id)
    elseif fits(id, f[6], f[8]) then
      redis.call('ZREM', K_WAITING, id)
      admit(id, f[7], f[6], f)
      redis.call('XADD', K_QUEUE, '*', S_JOB, id)
      free = free - 1
    end
  end
end

-- Ends a job for good: frees its slot, schedules its expiry (waiters are admitted when the
-- call ends).
local function finish(id, from, to, attempt, reason, rec)
  release(id, rec)
  -- Only a retrying job waits in the delayed set. The waiting set may still name a job
  -- admitted through a claim of its queue entry.
  if from == 'retrying' then redis.call('ZREM', K_DELAYED, id) end
  redis.call('ZREM', K_WAITING, id)
  transition(id, from, to, attempt, reason, rec, { F_FINISHED_AT, NOW, F_REASON, reason or '' })
  redis.call('PEXPIRE', job_key(id), retention_ms)
  redis.call('PEXPIRE', events_key(id), retention_ms)
end

-- An attempt failed for a reason outside the agent: retry after delay_ms while attempts
-- remain, else fail the job with the reason.
local function fail_attempt(id, from, attempt, reason, retryable, delay_ms, rec)
  local max_attempts = tonumber(redis.call('HGET', job_key(id), F_MAX_ATTEMPTS))
  attempt = tonumber(attempt)
  if retryable and attempt < max_attempts then
    release(id, rec)
    redis.call('ZADD', K_DELAYED, now + delay_ms, id)
    transition(id, from, 'retrying', attempt, reason, rec, { F_ATTEMPT, attempt + 1, F_HANDLE, '',
      F_HANDLE_IDENTITY, '', F_TARGET, '', F_REASON, reason, F_RUNNER_SEQ, 0, F_OUTPUT_BYTES, 0 })
    return 'retrying'
  end
  local why = reason
  if retryable then why = reason .. ' (gave up after ' .. attempt .. ' attempts)' end
  finish(id, from, 'failed', attempt, why, rec)
  return 'failed'
end

-- The ready queue's entries this call is done with: acknowledged and deleted when the call
-- ends (flush_acks), all in one XACK and one XDEL.
local ACKS = {}
local function ack(entry)
  if entry and entry ~= '' then ACKS[#ACKS + 1] = entry end
end
local function flush_acks()
  if #ACKS > 0 then
    redis.call('XACK', K_QUEUE, GROUP, unpack(ACKS))
    redis.call('XDEL', K_QUEUE, unpack(ACKS))
    ACKS = {}
  end
end
