// BullMQ beside agentsmith: one phase of the bench's BullMQ measurement (bench/src/bullmq.rs
// runs it, from the npm cache it installed BullMQ into, against a private redis-server).
//
//   node bench.mjs --port P --jobs N --concurrency C --phase add|process [--queue NAME]
//
// add:     N jobs added with Queue.add, one job per call, C calls in flight; each add's
//          latency is kept, so p50/p99 are exact. Timed from the first add until the last
//          returned.
// process: a Worker with a no-op processor and concurrency C takes the N jobs already
//          added. Timed from worker.run() until the N-th job completed.
//
// Prints one JSON line on stdout: phase, count, seconds, rate, p50_ms/p99_ms/max_ms (add),
// completed/failed (process), cpu_secs (this process, timed window), counts (getJobCounts
// after the timed window), bullmq (the installed version). Progress and errors go to
// stderr. Every connection goes to 127.0.0.1.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { Queue, Worker } from 'bullmq';

function options(argv) {
  const opts = { queue: 'bench' };
  for (let i = 0; i < argv.length; i += 2) {
    const [name, value] = [argv[i], argv[i + 1]];
    if (!name.startsWith('--') || value === undefined) {
      throw new Error(`expected --name value pairs, got ${argv.slice(i).join(' ')}`);
    }
    opts[name.slice(2)] = value;
  }
  for (const name of ['port', 'jobs', 'concurrency']) {
    const n = Number(opts[name]);
    if (!Number.isInteger(n) || n <= 0) {
      throw new Error(`--${name} must be a positive integer`);
    }
    opts[name] = n;
  }
  if (opts.phase !== 'add' && opts.phase !== 'process') {
    throw new Error('--phase must be add or process');
  }
  return opts;
}

// What agentsmith's lifecycle phase submits (bench/src/lifecycle.rs): agent "echo", task
// "bench job <i>", a 60 s timeout.
function payload(i) {
  return { agent: 'echo', task: `bench job ${i}`, timeout_secs: 60 };
}

// The nearest-rank percentile of sorted values.
function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  const rank = Math.ceil(p * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

function cpuSecs(since) {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1e6;
}

async function add(opts, connection) {
  const queue = new Queue(opts.queue, { connection });
  queue.on('error', (e) => console.error(`bench.mjs: queue error: ${e.message}`));
  await queue.waitUntilReady();
  const latencies = new Float64Array(opts.jobs);
  let next = 0;
  const lane = async () => {
    for (;;) {
      const i = next++;
      if (i >= opts.jobs) return;
      const start = performance.now();
      await queue.add('echo', payload(i));
      latencies[i] = performance.now() - start;
    }
  };
  const cpu = process.cpuUsage();
  const start = performance.now();
  await Promise.all(Array.from({ length: Math.min(opts.concurrency, opts.jobs) }, lane));
  const seconds = (performance.now() - start) / 1e3;
  const cpu_secs = cpuSecs(cpu);
  const counts = await queue.getJobCounts();
  await queue.close();
  latencies.sort();
  return {
    count: opts.jobs,
    seconds,
    rate: opts.jobs / seconds,
    p50_ms: percentile(latencies, 0.5),
    p99_ms: percentile(latencies, 0.99),
    max_ms: latencies[latencies.length - 1],
    cpu_secs,
    counts,
  };
}

async function processAll(opts, connection) {
  let completed = 0;
  let failed = 0;
  let allDone;
  const done = new Promise((resolve) => {
    allDone = resolve;
  });
  const settled = () => {
    if (completed + failed >= opts.jobs) allDone();
  };
  const worker = new Worker(opts.queue, async () => {}, {
    connection,
    concurrency: opts.concurrency,
    autorun: false,
  });
  worker.on('completed', () => {
    completed++;
    settled();
  });
  worker.on('failed', (job, e) => {
    failed++;
    if (failed <= 5) console.error(`bench.mjs: job ${job?.id} failed: ${e?.message}`);
    settled();
  });
  worker.on('error', (e) => console.error(`bench.mjs: worker error: ${e.message}`));
  await worker.waitUntilReady();
  const cpu = process.cpuUsage();
  const start = performance.now();
  const running = worker.run();
  await done;
  const seconds = (performance.now() - start) / 1e3;
  const cpu_secs = cpuSecs(cpu);
  await worker.close();
  await running;
  const queue = new Queue(opts.queue, { connection });
  const counts = await queue.getJobCounts();
  await queue.close();
  return {
    count: completed,
    seconds,
    rate: completed / seconds,
    completed,
    failed,
    cpu_secs,
    counts,
  };
}

async function main() {
  const opts = options(process.argv.slice(2));
  const connection = { host: '127.0.0.1', port: opts.port };
  const require = createRequire(import.meta.url);
  const bullmq = JSON.parse(readFileSync(require.resolve('bullmq/package.json'), 'utf8')).version;
  const result = opts.phase === 'add' ? await add(opts, connection) : await processAll(opts, connection);
  process.stdout.write(`${JSON.stringify({ phase: opts.phase, bullmq, ...result })}\n`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`bench.mjs: ${e?.stack ?? e}`);
    process.exit(1);
  },
);
