import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import {
  type CallOptions,
  credentials,
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type StatusObject,
  status,
} from '@grpc/grpc-js';
import {
  CHANNEL_OPTIONS,
  type ClassificationCounts,
  CoordinatorClient,
  CoordinatorServiceDefinition,
  type CoordinatorServiceServer,
  SERVER_OPTIONS,
  type TrainRequest,
  type TrainResponse,
} from '@shardline/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliPath } from './runCli.js';

// A lie about evaluation can only come from a worker that trained the whole epoch: evaluation
// runs at the epoch's end. So instead of a hand-written rogue client, a real worker process
// trains through a tampering proxy that forwards every call both ways unchanged, except the
// counts of its evaluation report. The coordinator must refuse the report with
// INVALID_ARGUMENT naming the field and the value, drop the worker, and redo the evaluation
// without it; the run then ends exactly as the same run without any lie.

const workerCli = fileURLToPath(new URL('../../worker/dist/cli.js', import.meta.url));
const PROXIED = 'honest-but-proxied';

const flags = [
  'train',
  '--model',
  'fast-cnn',
  '--epochs',
  '1',
  '--batch-size',
  '32',
  '--limit-train',
  '1280',
  '--limit-test',
  '100',
  '--seed',
  '11',
  '--log-format',
  'json',
  '--log-level',
  'error',
  '--listen',
  '127.0.0.1:0',
];

/** Longest a whole coordinator run may take here (each takes about 10 s on two cores). */
const RUN_TIMEOUT_MS = 60_000;

type Event = Record<string, unknown> & { event: string };
type Tamper = (counts: ClassificationCounts) => ClassificationCounts;

/**
 * What the proxy saw: every evaluation report before and after tampering, and how each Train
 * stream ended.
 */
interface Proxy {
  address: string;
  evaluations: Array<{ sent: ClassificationCounts; forwarded: ClassificationCounts }>;
  /** The status the coordinator ended each proxied Train stream with, passed on to the worker. */
  trainStatuses: StatusObject[];
  /** Resolves with the first status other than OK that the coordinator ended a Train stream with. */
  refused: Promise<StatusObject>;
  close(): Promise<void>;
}

let out: string;
const children = new Set<ChildProcess>();
const proxies = new Set<Proxy>();

/** Rejects, naming `what`, when `promise` takes longer than `ms`: no wait here is unbounded. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Spawns a node process running `script`, tracked so afterAll can kill it if a test gave up. */
function start(script: string, args: string[]): ChildProcess & { closed: Promise<number | null> } {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const closed = new Promise<number | null>((resolve) => {
    child.on('close', (code) => {
      children.delete(child);
      resolve(code);
    });
  });
  return Object.assign(child, { closed });
}

/** Call options with the caller's deadline: the proxy adds no time limit and removes none. */
const deadlineOf = (call: { getDeadline(): CallOptions['deadline'] }): Partial<CallOptions> => {
  const deadline = call.getDeadline();
  return deadline === undefined || deadline === Number.POSITIVE_INFINITY ? {} : { deadline };
};

/**
 * A CoordinatorService on 127.0.0.1:0 that forwards every call to `upstream`, messages, metadata
 * and statuses unchanged both ways, except the counts of the worker's evaluation reports, which
 * it passes through `tamper`. Same server and channel options as the apps, so 1 MiB chunks pass.
 */
async function startProxy(upstream: string, tamper: Tamper): Promise<Proxy> {
  const client = new CoordinatorClient(upstream, credentials.createInsecure(), CHANNEL_OPTIONS);
  const server = new Server(SERVER_OPTIONS);
  const evaluations: Proxy['evaluations'] = [];
  const trainStatuses: StatusObject[] = [];
  let onRefused: (s: StatusObject) => void = () => {};
  const refused = new Promise<StatusObject>((resolve) => {
    onRefused = resolve;
  });

  const toCoordinator = (message: TrainRequest): TrainRequest => {
    if (message.kind?.$case !== 'evaluation' || !message.kind.value.counts) return message;
    const sent = message.kind.value.counts;
    const forwarded = tamper(sent);
    evaluations.push({ sent, forwarded });
    return {
      ...message,
      kind: { ...message.kind, value: { ...message.kind.value, counts: forwarded } },
    };
  };

  const train = (down: ServerDuplexStream<TrainRequest, TrainResponse>) => {
    const up = client.train(down.metadata, deadlineOf(down));
    // Worker -> coordinator. Messages are small here (fast-cnn's weights are a few hundred
    // kilobytes a step and a worker waits for each step), so no backpressure is needed.
    down.on('data', (m: TrainRequest) => up.write(toCoordinator(m)));
    down.on('end', () => up.end());
    down.on('cancelled', () => up.cancel());
    // Coordinator -> worker.
    up.on('data', (m: TrainResponse) => down.write(m));
    // The status comes both as 'error' (when not OK) and as 'status'; 'status' carries it all.
    up.on('error', () => {});
    // Pass the status on only once every message before it has been passed on: 'end' comes
    // after the last 'data', and grpc-js may emit 'status' before the readable side drains.
    let drained = false;
    let final: StatusObject | undefined;
    const finish = () => {
      if (!drained || !final) return;
      if (final.code === status.OK) down.end(final.metadata);
      // grpc-js ends a server stream with the emitted status, trailers included.
      else down.emit('error', { ...final });
    };
    up.on('end', () => {
      drained = true;
      finish();
    });
    up.on('status', (s: StatusObject) => {
      trainStatuses.push(s);
      if (s.code !== status.OK) onRefused(s);
      final = s;
      finish();
    });
  };

  // Unary calls keep their metadata and deadline; an error comes back with its trailers.
  const service: CoordinatorServiceServer = {
    join: (call, callback) => client.join(call.request, call.metadata, deadlineOf(call), callback),
    leave: (call, callback) =>
      client.leave(call.request, call.metadata, deadlineOf(call), callback),
    getStatus: (call, callback) =>
      client.getStatus(call.request, call.metadata, deadlineOf(call), callback),
    // These runs train on a built-in dataset: nothing is fetched, and a fetch would be refused.
    fetchDataset: (call) =>
      call.destroy({
        code: status.UNIMPLEMENTED,
        details: 'the test proxy forwards no dataset',
      } as unknown as Error),
    train,
  };
  server.addService(CoordinatorServiceDefinition, service);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  const proxy: Proxy = {
    address: `127.0.0.1:${port}`,
    evaluations,
    trainStatuses,
    refused,
    close: async () => {
      proxies.delete(proxy);
      server.forceShutdown();
      client.close();
    },
  };
  proxies.add(proxy);
  return proxy;
}

/** The outcome of one coordinator run. */
interface Run {
  code: number | null;
  events: Event[];
  stderr: string;
  weights: Buffer;
  summary: { rejectedReports?: Record<string, number> };
}

/**
 * Runs the coordinator with `extra` flags into `<out>/<name>`. `onEvent` sees each event as it
 * comes (to start processes when the run gets somewhere); `settle`, awaited once the coordinator
 * has exited, even after a failure, collects and stops what those started.
 */
async function runCoordinator(
  name: string,
  extra: string[],
  onEvent: (event: Event) => void = () => {},
  settle: () => Promise<void> = async () => {},
): Promise<Run> {
  const dir = join(out, name);
  const coordinator = start(cliPath, [...flags, ...extra, '--out', dir]);
  let stderr = '';
  coordinator.stderr!.on('data', (d: Buffer) => {
    stderr += d;
  });
  const events: Event[] = [];
  createInterface({ input: coordinator.stdout! }).on('line', (line) => {
    const event = JSON.parse(line) as Event;
    events.push(event);
    onEvent(event);
  });
  try {
    const code = await within(coordinator.closed, RUN_TIMEOUT_MS, `coordinator run ${name}`);
    const summary = code === 0 ? JSON.parse(await readFile(join(dir, 'summary.json'), 'utf8')) : {};
    const weights =
      code === 0 ? await readFile(join(dir, 'model', 'weights.bin')) : Buffer.alloc(0);
    return { code, events, stderr, weights, summary };
  } finally {
    await settle();
  }
}

/** A worker process started by a test, and how it ended. */
interface WorkerRun {
  child: ReturnType<typeof start>;
  stderr: string;
  code?: number | null;
}

/** Starts a real worker process joining `coordinator` as `name`. */
function startWorker(coordinator: string, name: string): WorkerRun {
  const child = start(workerCli, [
    '--coordinator',
    coordinator,
    '--name',
    name,
    '--log-level',
    'error',
  ]);
  const worker: WorkerRun = { child, stderr: '' };
  child.stderr!.on('data', (d: Buffer) => {
    worker.stderr += d;
  });
  child.stdout!.resume();
  return worker;
}

/** What an attacked run left: the coordinator's run, the proxy's record, the workers' ends. */
interface Attacked {
  run: Run;
  proxy: Proxy;
  proxied: WorkerRun;
  /** The honest worker that joined once the coordinator had refused the proxied one. */
  replacement?: WorkerRun;
}

/**
 * One local worker plus a real worker process behind a proxy that applies `tamper`. With
 * --min-workers 2 no step runs before both are attached, so the run trains with two workers on
 * the same ranks as the calm run.
 *
 * --min-workers also holds for the evaluation: once the proxied worker is dropped, the redo waits
 * (forever, with the default --wait-timeout 0) for a second worker. So once the coordinator has
 * refused the proxied worker, a replacement joins directly, as an operator would start one.
 */
async function runAttacked(name: string, tamper: Tamper): Promise<Attacked> {
  const workers: WorkerRun[] = [];
  let proxy: Promise<Proxy> | undefined;
  let proxied: WorkerRun | undefined;
  let replacement: WorkerRun | undefined;
  const onEvent = (event: Event) => {
    if (event.event !== 'started') return;
    const coordinator = String(event.listen);
    proxy = startProxy(coordinator, tamper);
    void proxy.then((p) => {
      proxied = startWorker(p.address, PROXIED);
      workers.push(proxied);
      void p.refused.then(() => {
        replacement = startWorker(coordinator, 'replacement');
        workers.push(replacement);
      });
    });
  };
  const settle = async () => {
    // Each worker ends on its own: told to stop at the job's end, or refused with a status. One
    // still running 30 s later (a coordinator that died leaves it retrying) is killed and its
    // code left null, so the assertions report the run rather than this wait.
    for (const w of workers) {
      w.code = await within(w.child.closed, 30_000, 'worker').catch(() => {
        w.child.kill('SIGKILL');
        return null;
      });
    }
    await (await proxy)?.close();
  };
  const run = await runCoordinator(
    name,
    ['--local-workers', '1', '--min-workers', '2'],
    onEvent,
    settle,
  );
  return { run, proxy: (await proxy)!, proxied: proxied!, ...(replacement ? { replacement } : {}) };
}

const lastEvent = (run: Run) => run.events.at(-1);

let calm: Run;

beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), 'shardline-bad-evaluation-'));
  calm = await runCoordinator('calm', ['--local-workers', '2', '--min-workers', '2']);
  expect(calm.code, calm.stderr).toBe(0);
}, RUN_TIMEOUT_MS + 10_000);

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  for (const proxy of proxies) await proxy.close();
  if (out) await rm(out, { recursive: true, force: true });
});

/**
 * Moves the first non-empty confusion row into the next class's row: the total stays right, two
 * row sums go wrong (the first of them is the one refused).
 */
const moveRow: Tamper = (counts) => {
  const n = Math.sqrt(counts.confusion.length);
  const row = (r: number) => counts.confusion.slice(r * n, (r + 1) * n);
  const sum = (r: number) => row(r).reduce((a, b) => a + b, 0n);
  const from = Array.from({ length: n }, (_, r) => r).find((r) => sum(r) > 0n)!;
  const to = (from + 1) % n;
  const confusion = [...counts.confusion];
  for (let c = 0; c < n; c++) {
    confusion[to * n + c]! += confusion[from * n + c]!;
    confusion[from * n + c] = 0n;
  }
  return { ...counts, confusion };
};

const SLICE = '(test images \\d+ to \\d+)';
const cases: Array<{ name: string; lie: string; tamper: Tamper; refusal: RegExp }> = [
  {
    name: 'count',
    lie: 'an image count inflated to 1,000,000',
    tamper: (c) => ({ ...c, count: 1_000_000n }),
    refusal: new RegExp(`reported count 1000000 for ${SLICE}, expected 50\\.`),
  },
  {
    name: 'row',
    lie: 'a confusion row moved to another class (total unchanged)',
    tamper: moveRow,
    refusal: new RegExp(
      `reported confusion row (\\d+) \\(sum\\) \\d+ for ${SLICE}, expected \\d+, the images of class \\1 in the slice`,
    ),
  },
  {
    name: 'top-k',
    lie: 'more top-3 hits than images',
    tamper: (c) => ({
      ...c,
      topKHits: c.topKHits.map((h, i) => (c.topK[i] === 3 ? c.count + 1n : h)),
    }),
    refusal: new RegExp(
      `reported top_k_hits\\[1\\] \\(k = 3\\) 51 for ${SLICE}, expected a count from \\d+ \\(the correct top-1 predictions\\) to 50`,
    ),
  },
  {
    name: 'nan',
    lie: 'a NaN loss sum',
    tamper: (c) => ({ ...c, lossSum: Number.NaN }),
    refusal: new RegExp(`reported loss_sum NaN for ${SLICE}, expected a finite number, 0 or more`),
  },
  {
    name: 'huge',
    lie: 'a confusion entry of 2^60, above 2^53 - 1',
    tamper: (c) => ({ ...c, confusion: [2n ** 60n, ...c.confusion.slice(1)] }),
    refusal: /reported confusion entry 0 1152921504606846976, expected at most 9007199254740991\./,
  },
];

describe('lying evaluation reports from a worker that trained the whole epoch', () => {
  it(
    'the proxy alone changes nothing: the proxied worker trains, evaluates and stops like a local one',
    async () => {
      const { run, proxy, proxied, replacement } = await runAttacked('honest', (c) => c);
      expect(run.code, run.stderr).toBe(0);
      expect(lastEvent(run)).toMatchObject({ event: 'done', workers: 2 });
      expect(replacement).toBeUndefined();
      expect(run.summary.rejectedReports?.evaluation ?? 0).toBe(0);
      expect(proxy.evaluations).toHaveLength(1);
      expect(proxy.trainStatuses.map((s) => s.code)).toEqual([status.OK]);
      expect(proxied.code, proxied.stderr).toBe(0);
      // Workers leave only at the job's end, and the proxied one leaves as the local one does
      // (every worker cancels its stream once told to stop).
      const endOfEpoch = run.events.findIndex((e) => e.event === 'epoch_end');
      const left = run.events.filter((e) => e.event === 'worker_left');
      expect(left.filter((e) => run.events.indexOf(e) < endOfEpoch)).toEqual([]);
      const reason = (worker: string) => left.find((e) => e.worker === worker)?.reason;
      expect(reason(PROXIED)).toBe(reason('local-1'));
      expect(Buffer.compare(run.weights, calm.weights)).toBe(0);
      expect(lastEvent(run)!.test_accuracy).toBe(lastEvent(calm)!.test_accuracy);
    },
    RUN_TIMEOUT_MS + 40_000,
  );

  it.each(cases)(
    '$lie is refused with INVALID_ARGUMENT, and the run ends as the calm one',
    async ({ name, tamper, refusal }) => {
      const { run, proxy, proxied, replacement } = await runAttacked(name, tamper);
      // The lie was told once, after a whole epoch of honest training.
      expect(proxy.evaluations).toHaveLength(1);
      expect(proxy.evaluations[0]!.forwarded).not.toEqual(proxy.evaluations[0]!.sent);
      // The coordinator ended the worker's stream naming the field and the value...
      expect(proxy.trainStatuses).toHaveLength(1);
      expect(proxy.trainStatuses[0]).toMatchObject({
        code: status.INVALID_ARGUMENT,
        details: expect.stringMatching(refusal),
      });
      // ...and the worker got that same status and stopped instead of rejoining.
      expect(proxied.code).not.toBe(0);
      expect(proxied.stderr).toMatch(refusal);
      // The run dropped it, redid the evaluation without it and finished.
      expect(run.code, run.stderr).toBe(0);
      expect(lastEvent(run)).toMatchObject({ event: 'done' });
      const left = run.events.filter((e) => e.event === 'worker_left' && e.worker === PROXIED);
      expect(left).toHaveLength(1);
      expect(String(left[0]!.reason)).toMatch(refusal);
      expect(run.summary.rejectedReports).toMatchObject({ evaluation: 1 });
      // Its replacement (see runAttacked) finished the job like any honest worker.
      expect(replacement?.code, replacement?.stderr).toBe(0);
      // The lie changed nothing: same weights bit for bit, same test accuracy exactly.
      expect(Buffer.compare(run.weights, calm.weights)).toBe(0);
      expect(lastEvent(run)!.test_accuracy).toBe(lastEvent(calm)!.test_accuracy);
    },
    RUN_TIMEOUT_MS + 40_000,
  );
});
