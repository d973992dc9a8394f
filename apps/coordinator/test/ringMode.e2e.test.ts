/**
 * Ring mode end to end, with the real CLIs: the workers all-reduce their gradients among
 * themselves over their peer endpoints, the coordinator only commits steps, pulls state for
 * checkpoints and checks at every evaluation that all replicas hold the same weights.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  killStarted,
  logged,
  startProcess,
  type TestProcess,
  within,
  workerCli,
} from './processes.js';
import { cliPath, runCli } from './runCli.js';

let out: string;
beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), 'shardline-ring-'));
});
afterEach(() => killStarted());
afterAll(async () => {
  await rm(out, { recursive: true, force: true });
});

/** A small two-epoch job in ring mode: 64 steps of the MLP on 2,048 images. */
const RING_JOB = [
  'train',
  '--model',
  'mlp',
  '--epochs',
  '2',
  '--batch-size',
  '64',
  '--limit-train',
  '2048',
  '--limit-test',
  '300',
  '--exchange',
  'ring',
  '--listen',
  '127.0.0.1:0',
  '--log-format',
  'json',
  '--seed',
  '5',
];

const sha256 = async (path: string) =>
  createHash('sha256')
    .update(await readFile(path))
    .digest('hex');

describe('--exchange ring', () => {
  it('trains with three local workers whose replicas agree at every epoch, as star does within a point, and float16 traffic halves the bytes', {
    timeout: 420_000,
  }, async () => {
    const ring = await runCli([...RING_JOB, '--local-workers', '3', '--out', join(out, 'ring')]);
    expect(ring.code, ring.stderr).toBe(0);
    const events = ring.events();
    expect(events[0]).toMatchObject({ event: 'started', exchange: 'ring' });
    const epochs = events.filter((e) => e.event === 'epoch_end');
    expect(epochs).toHaveLength(2);
    for (const epoch of epochs) {
      expect(epoch.replica_checksum).toMatch(/^[0-9a-f]{8}$/);
      expect(epoch.workers).toBe(3);
    }
    const done = events.at(-1)!;
    expect(done).toMatchObject({ event: 'done', step: 64 });

    const starFlags = RING_JOB.map((f) => (f === 'ring' ? 'star' : f));
    const star = await runCli([...starFlags, '--local-workers', '3', '--out', join(out, 'star')]);
    expect(star.code, star.stderr).toBe(0);
    const starDone = star.events().at(-1)!;
    expect(
      Math.abs((done.test_accuracy as number) - (starDone.test_accuracy as number)),
    ).toBeLessThanOrEqual(0.01);
    // The coordinator moved no gradients: its traffic is the replica states it pushed and
    // pulled, far less than star's gradients and weights; the ring carried the gradients.
    expect(epochs[0]!.bytes_received as number).toBeLessThan(
      (star.events().find((e) => e.event === 'epoch_end')!.bytes_received as number) / 10,
    );
    expect(epochs[0]!.ring_bytes as number).toBeGreaterThan(0);

    // --gradient-dtype float16 on the ring: half the bytes, replicas still bit-identical (the
    // checksums agreed, or the epoch would have failed), and accuracy as with float32.
    const half = await runCli([
      ...RING_JOB,
      '--local-workers',
      '3',
      '--gradient-dtype',
      'float16',
      '--out',
      join(out, 'ring-float16'),
    ]);
    expect(half.code, half.stderr).toBe(0);
    expect(half.stderr).not.toMatch(/applies to star mode only/);
    const halfEpochs = half.events().filter((e) => e.event === 'epoch_end');
    expect(halfEpochs).toHaveLength(2);
    expect(halfEpochs[0]!.replica_checksum).toMatch(/^[0-9a-f]{8}$/);
    expect((halfEpochs[0]!.ring_bytes as number) / (epochs[0]!.ring_bytes as number)).toBeCloseTo(
      0.5,
      2,
    );
    expect(
      Math.abs((half.events().at(-1)!.test_accuracy as number) - (done.test_accuracy as number)),
    ).toBeLessThanOrEqual(0.02);
  });

  it('a worker without a peer endpoint is refused, saying how to serve one', {
    timeout: 120_000,
  }, async () => {
    const coordinator = startProcess(cliPath, [
      ...RING_JOB,
      '--local-workers',
      '0',
      '--min-workers',
      '1',
      '--wait-timeout',
      '20',
      '--out',
      join(out, 'refused'),
    ]);
    const started = await within(coordinator.event('started'), 60_000, 'the coordinator start');
    const worker = startProcess(workerCli, [
      '--coordinator',
      String(started.listen),
      '--backend',
      'wasm',
      '--peer-listen',
      'off',
    ]);
    expect(await within(worker.closed, 60_000, 'the refused worker')).not.toBe(0);
    expect(worker.stderr()).toMatch(/ring.*--peer-listen/s);
    coordinator.child.kill('SIGKILL');
  });

  it('resumes after the coordinator is SIGKILLed and ends byte-equal to the uninterrupted run', {
    timeout: 300_000,
  }, async () => {
    const flags = [...RING_JOB, '--local-workers', '3', '--checkpoint-every', '8'];
    const whole = await runCli([...flags, '--out', join(out, 'whole')]);
    expect(whole.code, whole.stderr).toBe(0);

    const victim = startProcess(cliPath, [...flags, '--out', join(out, 'killed')]);
    const written = await within(
      logged(victim, (r) => r.msg === 'checkpoint written' && Number(r.step) >= 24),
      200_000,
      'a checkpoint at step 24',
    );
    victim.child.kill('SIGKILL');
    await victim.closed;
    expect(Number(written.step)).toBeLessThan(64);
    killStarted();

    const resumed = await runCli([...flags, '--out', join(out, 'killed'), '--resume']);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.events()[0]).toMatchObject({ resumed_from_step: expect.any(Number) });
    const weights = (dir: string) => join(out, dir, 'model', 'weights.bin');
    expect(await sha256(weights('killed'))).toBe(await sha256(weights('whole')));
  });
});

describe('ring mode under faults', () => {
  it('finishes when one of four workers is SIGKILLed mid-run and another joins later, within a point of the calm run', {
    timeout: 400_000,
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
      '--exchange',
      'ring',
      '--local-workers',
      '0',
      '--min-workers',
      '3',
      '--listen',
      '127.0.0.1:0',
      '--log-format',
      'json',
      '--log-level',
      'warn',
    ];
    const worker = (address: string, name: string) =>
      startProcess(workerCli, [
        '--coordinator',
        address,
        '--name',
        name,
        '--backend',
        'wasm',
        '--log-level',
        'warn',
      ]);
    /** Runs a coordinator to the end, calling `onEvent` for each of its events as it comes. */
    const run = async (dir: string, onEvent: (event: Record<string, unknown>) => void) => {
      const coordinator = startProcess(cliPath, [...flags, '--out', join(out, dir)]);
      let seen = 0;
      const poll = setInterval(() => {
        while (seen < coordinator.events.length) onEvent(coordinator.events[seen++]!);
      }, 50);
      const code = await within(coordinator.closed, 350_000, `the ${dir} run`);
      clearInterval(poll);
      while (seen < coordinator.events.length) onEvent(coordinator.events[seen++]!);
      expect(code, coordinator.stderr()).toBe(0);
      return { events: coordinator.events, stderr: coordinator.stderr() };
    };

    const calm = await run('ring-calm', (event) => {
      if (event.event === 'started')
        for (const n of ['a', 'b', 'c', 'd']) worker(String(event.listen), `calm-${n}`);
    });

    let victim: TestProcess | undefined;
    let address = '';
    let attached = 0;
    const chaos = await run('ring-chaos', (event) => {
      if (event.event === 'started') {
        address = String(event.listen);
        victim = worker(address, 'chaos-a');
        for (const n of ['b', 'c', 'd']) worker(address, `chaos-${n}`);
      }
      if (event.event === 'worker_joined' && ++attached === 4) {
        // Once all four are in, let a few steps run, kill one while the ring is busy (a step
        // is almost all all-reduce and compute), and bring in a fifth a little later.
        setTimeout(() => victim?.child.kill('SIGKILL'), 2500);
        setTimeout(() => worker(address, 'chaos-e'), 5000);
      }
    });
    const left = chaos.events.filter((e) => e.event === 'worker_left').map((e) => e.worker);
    const joined = chaos.events.filter((e) => e.event === 'worker_joined').map((e) => e.worker);
    expect(left).toContain('chaos-a');
    expect(joined).toContain('chaos-e');
    // The kill landed inside a step: the coordinator dropped exactly the dead worker and ran
    // that step again in a new ring; its ring neighbours, whose all-reduce failed, stayed.
    const drops = chaos.stderr
      .split('\n')
      .filter((l) => l.includes('dropped a worker; retrying step'))
      .map((l) => JSON.parse(l) as { worker: string });
    expect(drops.map((d) => d.worker)).toEqual(['chaos-a']);
    const done = chaos.events.at(-1)!;
    expect(done).toMatchObject({ event: 'done', step: 128 });
    // No replica diverged: every evaluation found all replicas bit-identical.
    for (const e of chaos.events.filter((e) => e.event === 'epoch_end')) {
      expect(e.replica_checksum).toMatch(/^[0-9a-f]{8}$/);
    }
    const calmDone = calm.events.at(-1)!;
    expect(
      Math.abs((done.test_accuracy as number) - (calmDone.test_accuracy as number)),
    ).toBeLessThanOrEqual(0.01);
  });
});
