// Data-parallel scaling on this machine: the real coordinator CLI with 1, 2 and 4 local worker
// processes on loopback, at the same per-worker batch (so the global batch grows with the
// workers, as in Horovod's scaling benchmarks), plus the in-process mode for reference.
// Each run trains two short epochs; the second one's numbers are reported, so start-up and
// first-use costs (XNNPACK operator creation) are left out.
//
// Reports images/s, scaling efficiency (images/s with N workers / (N x images/s with 1)),
// the per-step split between the slowest worker's compute and the exchange (waiting for
// gradients beyond that compute: transfers, encoding, queueing), and tensor bytes moved.
// Each configuration runs --runs times (default 3), interleaved (every configuration once, then
// again), so drift in the machine's load hits all of them alike; the table shows medians, and
// efficiency compares median throughputs. On a shared machine single runs swing by tens of
// percent, mostly in compute time.
// Flags: --model seed-cnn, --batch 32 (per worker), --steps 8 (per epoch), --workers 1,2,4,
//        --gradient-dtype float32, --runs 3.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback;
};
const model = flag('model', 'seed-cnn');
const batch = Number(flag('batch', '32'));
const steps = Number(flag('steps', '8'));
const workerCounts = flag('workers', '1,2,4').split(',').map(Number);
const gradientDtype = flag('gradient-dtype', 'float32');
const runs = Number(flag('runs', '3'));
const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

async function run(mode, workers) {
  const out = await mkdtemp(join(tmpdir(), 'shardline-bench-'));
  const global = batch * workers;
  const argv = [
    cli,
    'train',
    '--model',
    model,
    '--epochs',
    '2',
    '--batch-size',
    String(global),
    '--limit-train',
    String(global * steps),
    '--limit-test',
    '200',
    '--eval-batch-size',
    '100',
    '--backend',
    'wasm',
    '--log-format',
    'json',
    '--log-level',
    'warn',
    '--out',
    join(out, 'run'),
    ...(mode === 'in-process'
      ? ['--in-process']
      : [
          '--local-workers',
          String(workers),
          '--listen',
          '127.0.0.1:0',
          '--gradient-dtype',
          gradientDtype,
        ]),
  ];
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout.on('data', (d) => {
    stdout += d;
  });
  const code = await new Promise((r) => child.on('close', r));
  await rm(out, { recursive: true, force: true });
  if (code !== 0) throw new Error(`${mode} with ${workers} worker(s) exited with ${code}`);
  const epochs = stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l))
    .filter((e) => e.event === 'epoch_end');
  return epochs.at(-1);
}

console.log(
  `data-parallel scaling, ${model}, wasm, ${batch} images per worker per step, ${steps} steps/epoch, ` +
    `gradients ${gradientDtype}; medians of ${runs} run(s); ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}); ${new Date().toISOString()}`,
);
if (Math.max(...workerCounts) > cpus().length) {
  console.log(
    `note: more workers than cores: workers share cores, so efficiency is bounded by ${cpus().length}/N.`,
  );
}
const rows = [['in-process', 1], ...workerCounts.map((n) => ['distributed', n])];
const samples = rows.map(() => []);
for (let r = 0; r < runs; r++) {
  for (const [i, [mode, n]] of rows.entries()) samples[i].push(await run(mode, n));
}
const median = (values) => [...values].sort((a, b) => a - b)[values.length >> 1];
const header =
  'mode          workers  global  images/s  efficiency  step s  compute s  exchange s (share)  optimizer s  MB/step';
console.log(header);
// Efficiency needs the one-worker row: without it (--workers 2,4) the column shows "-".
const oneWorker = rows.findIndex(([mode, n]) => mode === 'distributed' && n === 1);
const base =
  oneWorker >= 0 ? median(samples[oneWorker].map((e) => e.images_per_second)) : Number.NaN;
for (const [i, [mode, n]] of rows.entries()) {
  const of = (key) => median(samples[i].map((e) => e[key] ?? 0));
  const imagesPerSecond = of('images_per_second');
  const efficiency = mode === 'distributed' ? imagesPerSecond / (n * base) : Number.NaN;
  const share = median(samples[i].map((e) => e.exchange_seconds / e.step_seconds));
  const mb = (of('bytes_sent') + of('bytes_received')) / steps / 1e6;
  console.log(
    `${mode.padEnd(14)}${String(n).padStart(7)}${String(batch * n).padStart(8)}${imagesPerSecond.toFixed(1).padStart(10)}` +
      `${(Number.isNaN(efficiency) ? '-' : `${(efficiency * 100).toFixed(0)}%`).padStart(12)}` +
      `${of('step_seconds').toFixed(3).padStart(8)}${of('compute_seconds').toFixed(3).padStart(11)}` +
      `${of('exchange_seconds').toFixed(3).padStart(12)} (${(share * 100).toFixed(1).padStart(4)}%)` +
      `${of('optimizer_seconds').toFixed(3).padStart(13)}${mb.toFixed(1).padStart(9)}`,
  );
}
if (runs > 1) {
  const shares = samples
    .map((runsOf, i) => [rows[i], runsOf.map((e) => (100 * e.exchange_seconds) / e.step_seconds)])
    .filter(([[mode]]) => mode === 'distributed')
    .map(([[, n], values]) => `${n}: ${values.map((v) => v.toFixed(1)).join(', ')}`);
  console.log(`exchange share of each run, % (workers: runs): ${shares.join('; ')}`);
}
