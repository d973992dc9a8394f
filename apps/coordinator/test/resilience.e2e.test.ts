import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliPath, runCli } from './runCli.js';

const workerCli = fileURLToPath(new URL('../../worker/dist/cli.js', import.meta.url));

let out: string;
const children: ChildProcess[] = [];
beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), 'shardline-resilience-'));
});
afterAll(async () => {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await rm(out, { recursive: true, force: true });
});

function start(args: string[], { ownGroup = false } = {}): ChildProcess {
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: ownGroup,
  });
  children.push(child);
  return child;
}

/** A port that was free a moment ago, so a restarted coordinator can listen where the first did. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

const exited = (child: ChildProcess) =>
  new Promise<number | null>((resolve) =>
    child.exitCode !== null || child.signalCode !== null
      ? resolve(child.exitCode)
      : child.on('close', resolve),
  );

/** Resolves with the first stderr JSON log record of `child` that satisfies `match`. */
function waitForLog(
  child: ChildProcess,
  match: (record: Record<string, unknown>) => boolean,
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stderr! });
    lines.on('line', (line) => {
      try {
        const record = JSON.parse(line) as Record<string, unknown>;
        if (match(record)) {
          lines.close();
          resolve(record);
        }
      } catch {
        // Not a JSON record (a worker's text): ignore.
      }
    });
    child.on('close', () => reject(new Error('the process exited before the expected log line')));
  });
}

/** A small two-epoch MLP job on 4,096 images: the runs these tests interrupt and resume. */
const SMALL_JOB = [
  'train',
  '--model',
  'mlp',
  '--epochs',
  '2',
  '--batch-size',
  '64',
  '--limit-train',
  '4096',
  '--limit-test',
  '200',
];

/**
 * {@link SMALL_JOB} starting no local workers and waiting for one remote worker on
 * 127.0.0.1:`port`, checkpointing every 16 steps into `dir`.
 */
function remoteJob(port: number, dir: string): string[] {
  return [
    ...SMALL_JOB,
    '--local-workers',
    '0',
    '--min-workers',
    '1',
    '--listen',
    `127.0.0.1:${port}`,
    '--checkpoint-every',
    '16',
    '--log-format',
    'json',
    '--out',
    dir,
  ];
}

describe('checkpoints and --resume', () => {
  it('continues after the coordinator is SIGKILLed and ends with exactly the uninterrupted weights', {
    timeout: 300_000,
  }, async () => {
    const flags = [
      ...SMALL_JOB,
      '--local-workers',
      '2',
      '--listen',
      '127.0.0.1:0',
      '--checkpoint-every',
      '16',
      '--log-format',
      'json',
      '--seed',
      '9',
    ];
    const whole = await runCli([...flags, '--out', join(out, 'whole')]);
    expect(whole.code, whole.stderr).toBe(0);

    const victim = start([cliPath, ...flags, '--out', join(out, 'killed')]);
    const written = await waitForLog(
      victim,
      (r) => r.msg === 'checkpoint written' && Number(r.step) >= 48,
    );
    victim.kill('SIGKILL');
    await exited(victim);
    expect(Number(written.step)).toBeLessThan(128);

    const resumed = await runCli([...flags, '--out', join(out, 'killed'), '--resume']);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.events()[0]).toMatchObject({
      event: 'started',
      resumed_from_step: expect.any(Number),
    });
    const weights = (dir: string) => readFile(join(out, dir, 'model', 'weights.bin'));
    expect(Buffer.compare(await weights('whole'), await weights('killed'))).toBe(0);

    // SIGINT: the step in flight finishes, a checkpoint is written, the workers are told to stop,
    // and the coordinator exits 0; --resume then ends with the same weights again.
    const stopped = start([cliPath, ...flags, '--out', join(out, 'stopped')], { ownGroup: true });
    let stderr = '';
    stopped.stderr!.on('data', (d: Buffer) => {
      stderr += d;
    });
    await waitForLog(stopped, (r) => r.msg === 'checkpoint written' && Number(r.step) >= 16);
    // As Ctrl-C in a terminal does: the signal goes to the coordinator's whole process group.
    process.kill(-stopped.pid!, 'SIGINT');
    expect(await exited(stopped)).toBe(0);
    expect(stderr).toMatch(/stopped before the end; a checkpoint is in .*--resume/);
    const again = await runCli([...flags, '--out', join(out, 'stopped'), '--resume']);
    expect(again.code, again.stderr).toBe(0);
    expect(Buffer.compare(await weights('whole'), await weights('stopped'))).toBe(0);
  });

  it('a remote worker outlives its coordinator: it rejoins the resumed run and finishes', {
    timeout: 300_000,
  }, async () => {
    const port = await freePort();
    const flags = remoteJob(port, join(out, 'rejoin'));
    const first = start([cliPath, ...flags]);
    const survivor = start([
      workerCli,
      '--coordinator',
      `127.0.0.1:${port}`,
      '--name',
      'survivor',
      '--backend',
      'wasm',
      '--log-format',
      'json',
    ]);
    await waitForLog(first, (r) => r.msg === 'checkpoint written' && Number(r.step) >= 32);
    first.kill('SIGKILL');
    await exited(first);
    const rejoined = waitForLog(survivor, (r) => r.msg === 'rejoined coordinator');
    const second = start([cliPath, ...flags, '--resume']);
    await rejoined;
    expect(await exited(second)).toBe(0);
    expect(await exited(survivor)).toBe(0);
  });

  it('a clean stop of the coordinator ends a remote worker with status 75, to be restarted', {
    timeout: 300_000,
  }, async () => {
    const port = await freePort();
    const coordinator = start([cliPath, ...remoteJob(port, join(out, 'clean-stop'))]);
    const worker = start([workerCli, '--coordinator', `127.0.0.1:${port}`, '--name', 'remote']);
    let workerStderr = '';
    worker.stderr!.on('data', (d: Buffer) => {
      workerStderr += d;
    });
    await waitForLog(coordinator, (r) => r.msg === 'checkpoint written' && Number(r.step) >= 16);
    coordinator.kill('SIGTERM');
    expect(await exited(coordinator)).toBe(0);
    // Not 0 (that means the job is done): a service manager restarting on failure brings it
    // back to rejoin the resumed run.
    expect(await exited(worker)).toBe(75);
    expect(workerStderr).toMatch(
      /the coordinator stopped before the job finished .* Start this worker again to rejoin/,
    );
  });

  it('refuses to resume with different settings, naming each difference', async () => {
    const run = await runCli([
      'train',
      '--model',
      'mlp',
      '--in-process',
      '--limit-train',
      '256',
      '--limit-test',
      '50',
      '--epochs',
      '1',
      '--out',
      join(out, 'small'),
    ]);
    expect(run.code, run.stderr).toBe(0);
    // A finished run has nothing to resume.
    const finished = await runCli([
      'train',
      '--model',
      'mlp',
      '--in-process',
      '--resume',
      '--out',
      join(out, 'small'),
    ]);
    expect(finished.code).toBe(1);
    expect(finished.stderr).toMatch(/that run already finished \(found summary\.json\)/);
    await rm(join(out, 'small', 'summary.json'));
    await rm(join(out, 'small', 'model'), { recursive: true });
    const changed = await runCli([
      'train',
      '--model',
      'mlp',
      '--in-process',
      '--limit-train',
      '256',
      '--limit-test',
      '50',
      '--epochs',
      '1',
      '--seed',
      '1',
      '--out',
      join(out, 'small'),
      '--resume',
    ]);
    expect(changed.code).toBe(1);
    expect(changed.stderr).toMatch(
      /seed: checkpoint 42, now 1.*Pass the same flags as the original run/,
    );
  });
});

describe('membership faults', () => {
  it('keeps training when a worker is SIGKILLed mid-run and another joins later', {
    timeout: 300_000,
  }, async () => {
    const flags = [
      'train',
      '--model',
      'fast-cnn',
      '--epochs',
      '2',
      '--batch-size',
      '64',
      '--limit-train',
      '4096',
      '--limit-test',
      '1000',
      '--local-workers',
      '0',
      '--min-workers',
      '2',
      '--listen',
      '127.0.0.1:0',
      '--log-format',
      'json',
      '--log-level',
      'warn',
    ];
    const worker = (address: string, name: string) =>
      start([
        workerCli,
        '--coordinator',
        address,
        '--name',
        name,
        '--backend',
        'wasm',
        '--log-level',
        'warn',
      ]);

    /** Runs the coordinator to the end, calling `onEvent` for each of its JSON events. */
    const run = async (dir: string, onEvent: (event: Record<string, unknown>) => void) => {
      const coordinator = start([cliPath, ...flags, '--out', join(out, dir)]);
      const events: Array<Record<string, unknown>> = [];
      for await (const line of createInterface({ input: coordinator.stdout! })) {
        const event = JSON.parse(line) as Record<string, unknown>;
        events.push(event);
        onEvent(event);
      }
      expect(await exited(coordinator)).toBe(0);
      return events;
    };

    // The undisturbed run: three workers throughout.
    const calmEvents = await run('calm', (event) => {
      if (event.event === 'started')
        for (const n of ['a', 'b', 'c']) worker(String(event.listen), `calm-${n}`);
    });

    // The disturbed run: three workers, one SIGKILLed once training runs, a fourth joining later.
    let victim: ChildProcess | undefined;
    let address = '';
    const events = await run('chaos', (event) => {
      if (event.event === 'started') {
        address = String(event.listen);
        victim = worker(address, 'chaos-a');
        worker(address, 'chaos-b');
        worker(address, 'chaos-c');
      }
      if (event.event === 'worker_joined' && event.worker === 'chaos-c') {
        // Let a few steps run, kill one worker mid-step, and bring in another a little later.
        setTimeout(() => victim?.kill('SIGKILL'), 1500);
        setTimeout(() => worker(address, 'chaos-d'), 3500);
      }
    });
    const left = events.filter((e) => e.event === 'worker_left').map((e) => e.worker);
    const joined = events.filter((e) => e.event === 'worker_joined').map((e) => e.worker);
    expect(left).toContain('chaos-a');
    expect(joined).toContain('chaos-d');
    const done = events.at(-1)!;
    const calmDone = calmEvents.at(-1)!;
    expect(done).toMatchObject({ event: 'done', step: 128 });
    // Every step still averaged the gradient of its whole global batch: same accuracy within a point.
    expect(
      Math.abs((done.test_accuracy as number) - (calmDone.test_accuracy as number)),
    ).toBeLessThanOrEqual(0.01);
  });
});
