/**
 * Joins that never attach, over real gRPC: a client that joins hundreds of times and never opens
 * a Train stream must not leave the coordinator listing (and keeping) them. With
 * `--worker-timeout 2` they are forgotten within a few seconds, an attach with a forgotten id is
 * told to join again (NOT_FOUND), and a real worker that comes afterwards trains the job.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { credentials, type ServiceError, status } from '@grpc/grpc-js';
import {
  CHANNEL_OPTIONS,
  CoordinatorClient,
  type GetStatusResponse,
  type JoinResponse,
  type TrainRequest,
} from '@shardline/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { joinRequest } from './joinRequest.js';
import { cliPath } from './runCli.js';

const workerCli = fileURLToPath(new URL('../../worker/dist/cli.js', import.meta.url));

let out: string;
let coordinator: ChildProcess;
let client: InstanceType<typeof CoordinatorClient>;
const events: Array<Record<string, unknown>> = [];
let finished: Promise<number | null>;

beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), 'shardline-joins-'));
  coordinator = spawn(
    process.execPath,
    [
      cliPath,
      'train',
      ...['--model', 'mlp', '--epochs', '1', '--batch-size', '64'],
      ...['--limit-train', '512', '--limit-test', '100', '--seed', '5'],
      ...['--local-workers', '0', '--min-workers', '1', '--worker-timeout', '2'],
      ...['--wait-timeout', '60', '--listen', '127.0.0.1:0', '--out', join(out, 'run')],
      ...['--log-format', 'json', '--log-level', 'error'],
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  finished = new Promise((resolve) => coordinator.on('close', resolve));
  const lines = createInterface({ input: coordinator.stdout! });
  const address = await new Promise<string>((resolve) =>
    lines.on('line', (line) => {
      const event = JSON.parse(line) as Record<string, unknown>;
      events.push(event);
      if (event.event === 'started') resolve(String(event.listen));
    }),
  );
  client = new CoordinatorClient(address, credentials.createInsecure(), CHANNEL_OPTIONS);
}, 60_000);

afterAll(async () => {
  client?.close();
  if (coordinator.exitCode === null) coordinator.kill('SIGKILL');
  await rm(out, { recursive: true, force: true });
});

const joinOnce = (name: string) =>
  new Promise<JoinResponse>((resolve, reject) =>
    client.join(joinRequest({ workerName: name }), (error, response) =>
      error ? reject(error) : resolve(response),
    ),
  );

const listed = () =>
  new Promise<GetStatusResponse>((resolve, reject) =>
    client.getStatus({}, (error, response) => (error ? reject(error) : resolve(response))),
  );

describe('joins that never attach', () => {
  it('are forgotten after --worker-timeout, and their ids are told to join again', async () => {
    const joins = await Promise.all(Array.from({ length: 200 }, (_, i) => joinOnce(`idle-${i}`)));
    expect((await listed()).workers).toHaveLength(200);
    // The sweep runs every second: gone within --worker-timeout plus a second or two.
    const deadline = Date.now() + 10_000;
    while ((await listed()).workers.length > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
    }
    expect((await listed()).workers).toEqual([]);
    const call = client.train();
    const refused = await new Promise<ServiceError>((resolve) => {
      call.on('error', resolve);
      call.write({
        kind: {
          $case: 'attach',
          value: { workerId: joins[0]!.workerId, weightsVersion: undefined },
        },
      } satisfies TrainRequest);
    });
    expect(refused.code).toBe(status.NOT_FOUND);
    expect(refused.details).toContain(`Unknown worker id ${joins[0]!.workerId}: call Join first`);
  });

  it('leave the job free for a real worker, which trains it to the end', async () => {
    const address = String(events.find((e) => e.event === 'started')?.listen);
    const worker = spawn(
      process.execPath,
      [workerCli, '--coordinator', address, '--name', 'real', '--log-level', 'error'],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    const workerExit = new Promise<number | null>((resolve) => worker.on('close', resolve));
    expect(await finished).toBe(0);
    expect(await workerExit).toBe(0);
    expect(events.at(-1)).toMatchObject({ event: 'done', workers: 1 });
  }, 120_000);
});
