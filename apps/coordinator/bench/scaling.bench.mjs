// Data-parallel scaling on this machine: the real coordinator CLI with 1, 2 and 4 local worker
// processes on loopback, at the same per-worker batch (so the global batch grows with the
// workers, as in Horovod's scaling benchmarks), plus the in-process mode for reference.
// Each run trains two short epochs; the second one's numbers are reported, so start-up and
// first-use costs (XNNPACK operator creation) are left out.
//
// Reports images/s, scaling efficiency (images/s with N workers / (N x images/s with 1)),
// the per-step split between the slowest worker's compute and the exchange (waiting for
// gradients beyond that compute: transfers, encoding, queueing), and tensor bytes moved.
// Flags: --model seed-cnn, --batch 32 (per worker), --steps 8 (per epoch), --workers 1,2,4,
//        --gradient-dtype float32.
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
    `gradients ${gradientDtype}; ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}); ${new Date().toISOString()}`,
);
if (Math.max(...workerCounts) > cpus().length) {
  console.log(
    `note: more workers than cores: workers share cores, so efficiency is bounded by ${cpus().length}/N.`,
  );
}
const header =
  'mode          workers  global  images/s  efficiency  step s  compute s  exchange s (share)  optimizer s  MB/step';
console.log(header);
const rows = [['in-process', 1], ...workerCounts.map((n) => ['distributed', n])];
let base;
for (const [mode, n] of rows) {
  const e = await run(mode, n);
  if (mode === 'distributed' && n === 1) base = e.images_per_second;
  const efficiency = mode === 'distributed' && base ? e.images_per_second / (n * base) : Number.NaN;
  const mb = e.bytes_sent !== undefined ? (e.bytes_sent + e.bytes_received) / steps / 1e6 : 0;
  console.log(
    `${mode.padEnd(14)}${String(n).padStart(7)}${String(batch * n).padStart(8)}${e.images_per_second.toFixed(1).padStart(10)}` +
      `${(Number.isNaN(efficiency) ? '-' : `${(efficiency * 100).toFixed(0)}%`).padStart(12)}` +
      `${e.step_seconds.toFixed(3).padStart(8)}${e.compute_seconds.toFixed(3).padStart(11)}` +
      `${e.exchange_seconds.toFixed(3).padStart(12)} (${((e.exchange_seconds / e.step_seconds) * 100).toFixed(1).padStart(4)}%)` +
      `${e.optimizer_seconds.toFixed(3).padStart(13)}${mb.toFixed(1).padStart(9)}`,
  );
}
