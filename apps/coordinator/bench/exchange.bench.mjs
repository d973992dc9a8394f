// The gradient exchange as a cluster would see it (#13): the real coordinator and worker CLIs,
// each in a network namespace of its own on one emulated LAN (a bridge, a veth pair per host,
// a tbf rate limit on both directions of every host's link, nothing over loopback), in the
// exchange-bound regime: compute made negligible (an MLP sized to the seed CNN's gradient, two
// images per worker per step), so each step's time is the exchange.
//
// Star mode: every step the coordinator receives N gradients and sends N weight copies, so its
// link carries 2 x N x gradient bytes per step and its steps/s can reach at most
// rate / (2 N G). Ring mode (--exchange ring): the workers all-reduce among themselves, each
// link carrying 2 (N-1)/N x G per step whatever N, so at most rate / (2 (N-1)/N x G) steps/s,
// and the coordinator's link carries only the control messages. Each row is compared with its
// mode's bound.
//
// Each case reports one epoch of --steps steps in its steady state. Star: the first epoch, as
// scaling.bench.mjs does not: a worker is sent the weights only when its copy is stale, so an
// epoch's evaluation hands the workers the weights its first step then does not send, and a
// later epoch's steps look cheaper than steady state. In the first epoch every step moves its
// full 2 x N x G; the first step's set-up (XNNPACK, TCP slow start) adds well under 0.1 s to
// steps that take seconds. Ring: the second of two epochs, because the first begins with the
// coordinator pushing every worker its replica (N x G over the coordinator's link, once per
// run, like joining); from then on no weights cross the coordinator's link, and the epoch's
// evaluation moves none either (the replicas evaluate their own weights).
// Bytes per step come twice: tensor bytes from the coordinator's epoch_end event (payload only),
// and wire bytes from the namespaces' eth0 counters from the coordinator's start to epoch_end
// (headers, gRPC framing, joining and the evaluation's one weight copy per worker included,
// spread over the steps).
//
// Flags: --modes star,ring, --workers 2,3,4, --rate 100mbit (tc syntax: 1gbit, 500mbit), --steps 8,
//        --params 1.4m (gradient size: 1.4m is the seed CNN's 5.6 MB; 25m a ResNet-50's 100 MB),
//        --images 2 (per worker per step), --json <file>,
//        --gradient-dtype float32|float16|bfloat16 (the coordinator's flag: gradients, and in
//        ring mode all ring traffic, in 2 bytes a value; star still sends float32 weights),
//        --model fast-cnn (a whole-training row: that built-in model at its real compute, with
//        --images 32 or so; --params is then ignored and the row's images/s is the number).
// Needs root and iproute2 (ip netns, tc); skips with a message where it cannot run.
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { createShapedLan, inHost, linkBytes, netnsUnavailable, parseRate } from './netns.mjs';

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback;
};
const workerCounts = flag('workers', '2,3,4').split(',').map(Number);
const modes = flag('modes', 'star,ring').split(',');
for (const mode of modes) {
  if (mode !== 'star' && mode !== 'ring') {
    console.error(`--modes "${modes.join(',')}": expected star, ring or both (star,ring).`);
    process.exit(1);
  }
}
const rate = flag('rate', '100mbit');
const steps = Number(flag('steps', '8'));
const imagesPerWorker = Number(flag('images', '2'));
const paramsFlag = flag('params', '1.4m');
const jsonPath = flag('json', undefined);
const model = flag('model', 'mlp');
const gradientDtype = flag('gradient-dtype', 'float32');
const DTYPE_BYTES = { float32: 4, float16: 2, bfloat16: 2 };
if (!(gradientDtype in DTYPE_BYTES)) {
  console.error(`--gradient-dtype "${gradientDtype}": expected float32, float16 or bfloat16.`);
  process.exit(1);
}

const coordinatorCli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const workerCli = fileURLToPath(new URL('../../worker/dist/cli.js', import.meta.url));

const unavailable = netnsUnavailable();
if (unavailable) {
  console.log(`exchange benchmark skipped: ${unavailable}.`);
  process.exit(0);
}
for (const cli of [coordinatorCli, workerCli]) {
  if (!existsSync(cli)) {
    console.error(
      `${cli} is missing: run \`pnpm bench:exchange\` (it builds first) or pnpm build.`,
    );
    process.exit(1);
  }
}

const bitsPerSecond = parseRate(rate);
// Parameters wanted: "1.4m", "25m", or a plain count.
const wanted = (() => {
  const m = /^(\d+(?:\.\d+)?)(k|m)?$/i.exec(paramsFlag);
  if (!m) {
    console.error(`--params "${paramsFlag}" is not understood: expected like 1.4m, 25m or 500000.`);
    process.exit(1);
  }
  return Number(m[1]) * ({ k: 1e3, m: 1e6 }[(m[2] ?? '').toLowerCase()] ?? 1);
})();
// mlp on 28x28x1 with one hidden layer of h units: 784h + h (dense) + 10h + 10 (softmax) weights.
// 1.4m gives h = 1,761; the seed CNN has 1,413,834 parameters, so 1.4m takes h = 1,778 instead.
const targetParams = paramsFlag === '1.4m' ? 1_413_834 : wanted;
const hiddenUnits = Math.max(1, Math.round((targetParams - 10) / 795));

// Everything made so far, for the finally blocks and for SIGINT/SIGTERM.
const live = { children: new Set(), lans: new Set(), dirs: new Set() };
const cleanUp = async () => {
  for (const child of live.children) if (child.exitCode === null) child.kill('SIGKILL');
  for (const lan of live.lans) lan.destroy();
  for (const dir of live.dirs) await rm(dir, { recursive: true, force: true });
};
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    console.error(`\n${signal}: removing the namespaces and stopping the processes.`);
    cleanUp().finally(() => process.exit(130));
  });
}

/** Waits for a child to end, killing it after `ms`; resolves with its exit code and stderr. */
function finished(child, ms, what) {
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      stderr += `\n(${what} killed after ${ms / 1000} s)`;
      child.kill('SIGKILL');
    }, ms);
    child.on('close', (code) => {
      clearTimeout(timer);
      live.children.delete(child);
      resolve({ code, stderr });
    });
  });
}

async function runCase(mode, n) {
  const lan = createShapedLan(n + 1, rate);
  live.lans.add(lan);
  const dir = await mkdtemp('/tmp/xch-run-');
  live.dirs.add(dir);
  try {
    const [coordinatorHost, ...workerHosts] = lan.hosts;
    const listen = `${coordinatorHost.address}:7070`;
    const batch = n * imagesPerWorker;
    const coordinator = inHost(coordinatorHost, [
      coordinatorCli,
      'train',
      '--local-workers',
      '0',
      '--min-workers',
      String(n),
      '--listen',
      listen,
      // A private emulated LAN: neither a token nor TLS, so the bytes are the tensors' own.
      '--insecure',
      '--gradient-dtype',
      gradientDtype,
      '--exchange',
      mode,
      '--model',
      model,
      ...(model === 'mlp' ? ['--hp', `hiddenUnits=${hiddenUnits}`] : []),
      '--epochs',
      mode === 'ring' ? '2' : '1',
      '--batch-size',
      String(batch),
      '--limit-train',
      String(batch * steps),
      '--limit-test',
      String(10 * n),
      '--eval-batch-size',
      '10',
      '--backend',
      'wasm',
      '--no-download',
      // A 25M-parameter share takes tens of seconds to cross a 100 Mbit/s link.
      '--worker-timeout',
      '600',
      '--wait-timeout',
      '120',
      '--log-format',
      'json',
      '--log-level',
      'warn',
      '--out',
      `${dir}/run`,
    ]);
    live.children.add(coordinator);
    const coordinatorDone = finished(coordinator, 1_200_000, 'the coordinator');
    const events = [];
    // Link counters at the start and at epoch_end, read as the event arrives.
    const counters = [];
    let buffered = '';
    const ready = new Promise((resolve, reject) => {
      coordinator.once('close', (code) =>
        reject(new Error(`the coordinator exited (${code}) before it started`)),
      );
      coordinator.stdout.on('data', (d) => {
        buffered += d;
        const lines = buffered.split('\n');
        buffered = lines.pop() ?? '';
        for (const line of lines.filter((l) => l.trim())) {
          const event = JSON.parse(line);
          events.push(event);
          // Link counters at the measured epoch's start and end (ring: the second epoch's
          // start is the first one's epoch_end).
          if (event.event === 'started' || event.event === 'epoch_end') {
            counters.push(lan.hosts.map(linkBytes));
          }
          if (event.event === 'started') resolve(event);
        }
      });
    });
    const started = await ready;
    const workers = workerHosts.map((host, i) => {
      const child = inHost(host, [
        workerCli,
        '--coordinator',
        listen,
        '--name',
        `w${i + 1}`,
        '--backend',
        'wasm',
        '--no-download',
        '--log-level',
        'warn',
      ]);
      live.children.add(child);
      return finished(child, 1_200_000, `worker ${i + 1}`);
    });
    const result = await coordinatorDone;
    const workerResults = await Promise.all(workers);
    if (result.code !== 0) {
      throw new Error(
        `the coordinator with ${n} workers exited with ${result.code}:\n${result.stderr}`,
      );
    }
    for (const [i, w] of workerResults.entries()) {
      if (w.code !== 0)
        throw new Error(`worker ${i + 1} of ${n} exited with ${w.code}:\n${w.stderr}`);
    }
    const epochEnds = events.filter((e) => e.event === 'epoch_end');
    const last = epochEnds.at(-1);
    const measured = epochEnds.length - 1;
    const stepsPerEpoch = started.steps_per_epoch;
    const gradientBytes = started.parameters * DTYPE_BYTES[gradientDtype];
    const weightBytes = started.parameters * 4;
    const rateBytes = bitsPerSecond / 8;
    const before = counters[measured];
    const after = counters[measured + 1];
    const wire = (i) =>
      before && after
        ? (after[i].sent - before[i].sent + after[i].received - before[i].received) / stepsPerEpoch
        : Number.NaN;
    const workerWire = workerHosts.map((_, i) => wire(i + 1));
    const tensorBytes = ((last.bytes_sent ?? 0) + (last.bytes_received ?? 0)) / stepsPerEpoch;
    // Star: N gradients in and N float32 weight copies out over the coordinator's link.
    const starBound = rateBytes / (n * (gradientBytes + weightBytes));
    const ringBound = rateBytes / (((2 * (n - 1)) / n) * gradientBytes);
    const bound = mode === 'star' ? starBound : ringBound;
    const workerWireMean = workerWire.reduce((a, b) => a + b, 0) / n;
    return {
      mode,
      workers: n,
      rate,
      parameters: started.parameters,
      gradient_dtype: gradientDtype,
      gradient_bytes: gradientBytes,
      steps_per_epoch: stepsPerEpoch,
      batch_size: started.batch_size,
      step_seconds: last.step_seconds,
      compute_seconds: last.compute_seconds,
      exchange_seconds: last.exchange_seconds,
      optimizer_seconds: last.optimizer_seconds,
      steps_per_second: 1 / last.step_seconds,
      model,
      images_per_second: last.images_per_second,
      coordinator_tensor_bytes_per_step: tensorBytes,
      // Star: the coordinator's tensors spread over the workers. Ring: what each worker's link
      // carried, both directions (the ring's tensor bytes are most of it).
      worker_tensor_bytes_per_step: mode === 'star' ? tensorBytes / n : workerWireMean,
      coordinator_wire_bytes_per_step: wire(0),
      worker_wire_bytes_per_step: workerWireMean,
      star_bound_steps_per_second: starBound,
      ring_bound_steps_per_second: ringBound,
      share_of_bound: 1 / last.step_seconds / bound,
    };
  } finally {
    for (const child of live.children) if (child.exitCode === null) child.kill('SIGKILL');
    lan.destroy();
    live.lans.delete(lan);
    await rm(dir, { recursive: true, force: true });
    live.dirs.delete(dir);
  }
}

console.log(
  `gradient exchange on an emulated LAN: every host's link ${rate} each way (tbf), one namespace ` +
    `per process; ${model === 'mlp' ? `mlp hiddenUnits=${hiddenUnits} (${(795 * hiddenUnits + 10).toLocaleString('en-US')} parameters` : `${model} (its real compute`}` +
    `, ${gradientDtype} gradients), ${imagesPerWorker} images per worker per step, ${steps} steps ` +
    `(one epoch); wasm; ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}); ` +
    new Date().toISOString(),
);
const rows = [];
try {
  for (const mode of modes) for (const n of workerCounts) rows.push(await runCase(mode, n));
} finally {
  await cleanUp();
}

const mb = (bytes) => (bytes / 1e6).toFixed(1);
console.log(
  'mode  workers  steps/s  images/s  step s  exchange s  coord MB/step (tensor, wire)  worker MB/step (tensor, wire)  star bound  ring bound  % of own bound',
);
for (const r of rows) {
  console.log(
    `${r.mode.padEnd(6)}${String(r.workers).padStart(7)}${r.steps_per_second.toFixed(3).padStart(9)}${r.images_per_second.toFixed(1).padStart(10)}` +
      `${r.step_seconds.toFixed(2).padStart(8)}${r.exchange_seconds.toFixed(2).padStart(12)}` +
      `${`${mb(r.coordinator_tensor_bytes_per_step)}, ${mb(r.coordinator_wire_bytes_per_step)}`.padStart(30)}` +
      `${`${mb(r.worker_tensor_bytes_per_step)}, ${mb(r.worker_wire_bytes_per_step)}`.padStart(31)}` +
      `${r.star_bound_steps_per_second.toFixed(3).padStart(12)}${r.ring_bound_steps_per_second.toFixed(3).padStart(12)}` +
      `${`${(r.share_of_bound * 100).toFixed(0)}%`.padStart(16)}`,
  );
}
console.log(
  'star bound: rate / (N (G + W)) on the coordinator link (gradients in, then float32 weights out); ' +
    'ring bound: rate / (2 (N-1)/N G) on every link (bandwidth-optimal all-reduce). ' +
    'Wire MB include headers, joining and the evaluation\u2019s weights.',
);
if (jsonPath) {
  await writeFile(
    jsonPath,
    `${JSON.stringify({ date: new Date().toISOString(), rate, cores: cpus().length, cpu: cpus()[0]?.model, rows }, null, 2)}\n`,
  );
  console.log(`wrote ${jsonPath}`);
}
