import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { credentials } from '@grpc/grpc-js';
import { readIdxFile } from '@shardline/datasets';
import {
  CHANNEL_OPTIONS,
  CoordinatorClient,
  type GetStatusResponse,
  JobState,
} from '@shardline/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkHealth } from './healthCheck.js';
import { cliPath, runCli } from './runCli.js';

function getStatus(address: string): Promise<GetStatusResponse> {
  const client = new CoordinatorClient(address, credentials.createInsecure(), CHANNEL_OPTIONS);
  return new Promise<GetStatusResponse>((resolve, reject) =>
    client.getStatus({}, (error, response) => (error ? reject(error) : resolve(response))),
  ).finally(() => client.close());
}

const workerCli = fileURLToPath(new URL('../../worker/dist/cli.js', import.meta.url));

let out: string;
beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), 'shardline-dist-'));
});
afterAll(async () => {
  await rm(out, { recursive: true, force: true });
});

const common = [
  '--model',
  'fast-cnn',
  '--batch-size',
  '64',
  '--limit-train',
  '2048',
  '--limit-test',
  '1000',
  '--log-format',
  'json',
];

describe('distributed training over gRPC', () => {
  it('trains with a coordinator and two local worker processes on loopback, both contributing', async () => {
    const dir = join(out, 'local');
    const run = await runCli([
      'train',
      '--epochs',
      '2',
      '--local-workers',
      '2',
      '--listen',
      '127.0.0.1:0',
      '--out',
      dir,
      ...common,
    ]);
    expect(run.code, run.stderr).toBe(0);
    const events = run.events();
    const kinds = events.map((e) => e.event);
    expect(kinds[0]).toBe('started');
    expect(kinds.filter((k) => k === 'worker_joined')).toHaveLength(2);
    expect(kinds.filter((k) => k === 'epoch_end')).toHaveLength(2);
    expect(kinds.at(-1)).toBe('done');
    const done = events.at(-1)!;
    expect(done).toMatchObject({ epoch: 2, step: 64, workers: 2, model_path: join(dir, 'model') });
    // Two epochs of 2,048 images: far above chance, in line with one process on the same data.
    expect(done.test_accuracy).toBeGreaterThan(0.7);
    const summary = JSON.parse(await readFile(join(dir, 'summary.json'), 'utf8'));
    expect(summary.evaluation.count).toBe(1000);

    // The evaluation names test images it got wrong: the 32 lowest indices among the 1,000,
    // merged from both workers' slices, each with its real label and a different prediction.
    const last = events.filter((e) => e.event === 'epoch_end').at(-1)!;
    const wrong = last.misclassified as Array<{
      index: number;
      label: number;
      predicted: number;
      confidence: number;
    }>;
    expect(wrong).toHaveLength(32);
    const { data: labels } = await readIdxFile(
      '/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz',
    );
    const indices = wrong.map((m) => m.index);
    expect(indices).toEqual([...indices].sort((a, b) => a - b));
    expect(indices.at(-1)).toBeLessThan(1000);
    for (const m of wrong) {
      expect(m.label).toBe(labels[m.index]);
      expect(m.predicted).not.toBe(m.label);
      expect(m.confidence).toBeGreaterThan(0);
      expect(m.confidence).toBeLessThanOrEqual(1);
    }
    // The list is a sample of the confusion matrix's off-diagonal entries.
    const confusion = last.confusion as number[][];
    const offDiagonal =
      confusion.flat().reduce((a, b) => a + b, 0) -
      confusion.reduce((sum, row, i) => sum + row[i]!, 0);
    expect(offDiagonal).toBeGreaterThanOrEqual(32);
  });

  it('moves weights and gradients losslessly: one worker over gRPC ends bit-identical to --in-process', async () => {
    const args = [
      'train',
      '--epochs',
      '1',
      '--model',
      'mlp',
      '--limit-train',
      '512',
      '--limit-test',
      '100',
      '--seed',
      '5',
      '--log-format',
      'json',
    ];
    const local = await runCli([...args, '--in-process', '--out', join(out, 'same-a')]);
    const remote = await runCli([
      ...args,
      '--local-workers',
      '1',
      '--listen',
      '127.0.0.1:0',
      '--out',
      join(out, 'same-b'),
    ]);
    expect(local.code, local.stderr).toBe(0);
    expect(remote.code, remote.stderr).toBe(0);
    const weights = (dir: string) => readFile(join(out, dir, 'model', 'weights.bin'));
    expect(Buffer.compare(await weights('same-a'), await weights('same-b'))).toBe(0);
    const epoch = remote.events().find((e) => e.event === 'epoch_end')!;
    // 16 steps: weights out (the initial ones, then one per step) and one gradient in, 4 bytes a value.
    const parameters = remote.events()[0]!.parameters as number;
    expect(epoch.bytes_received).toBe(16 * parameters * 4);
    expect(epoch.bytes_sent).toBe(16 * parameters * 4);
  });

  it('waits for remote workers with --local-workers 0 and trains with those that join', async () => {
    const dir = join(out, 'remote');
    const coordinator = spawn(
      process.execPath,
      [
        cliPath,
        'train',
        '--epochs',
        '1',
        '--local-workers',
        '0',
        '--min-workers',
        '2',
        '--listen',
        '127.0.0.1:0',
        '--out',
        dir,
        ...common,
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stderr = '';
    coordinator.stderr.on('data', (d: Buffer) => {
      stderr += d;
    });
    const events: Array<Record<string, unknown>> = [];
    let status: GetStatusResponse | undefined;
    let health: unknown;
    const workers: ReturnType<typeof spawn>[] = [];
    const exited = new Promise<number | null>((resolve) => coordinator.on('close', resolve));
    for await (const line of createInterface({ input: coordinator.stdout })) {
      const event = JSON.parse(line) as Record<string, unknown>;
      events.push(event);
      if (event.event === 'started') {
        // Operators can ask where the job stands: it waits for its two workers.
        status = await getStatus(String(event.listen));
        health = await checkHealth(String(event.listen), 'shardline.v1.CoordinatorService');
        // Start the workers only now, as an operator would on other machines.
        for (const name of ['remote-a', 'remote-b']) {
          workers.push(
            spawn(
              process.execPath,
              [
                workerCli,
                '--coordinator',
                String(event.listen),
                '--name',
                name,
                '--backend',
                'wasm',
              ],
              { stdio: 'ignore' },
            ),
          );
        }
      }
    }
    const code = await exited;
    const workerCodes = await Promise.all(
      workers.map(
        (w) => new Promise((r) => (w.exitCode !== null ? r(w.exitCode) : w.on('close', r))),
      ),
    );
    expect(code, stderr).toBe(0);
    expect(workerCodes).toEqual([0, 0]);
    const joined = events.filter((e) => e.event === 'worker_joined').map((e) => e.worker);
    expect(joined.sort()).toEqual(['remote-a', 'remote-b']);
    expect(events.at(-1)).toMatchObject({ event: 'done', workers: 2, step: 32 });
    // Orchestrators' probes see the coordinator serving as soon as it listens.
    expect(health).toMatchObject({ status: 'SERVING' });
    expect(status).toMatchObject({ state: JobState.WAITING_FOR_WORKERS, workers: [], step: 0n });
    expect(status!.job).toMatchObject({
      modelName: 'fast-cnn',
      globalBatchSize: 64,
      limitTrain: 2048,
    });
  });
});
