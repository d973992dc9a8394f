/**
 * Rogue peers in ring mode, against the real coordinator and worker CLIs. A rogue member (a
 * hand-written client that joins with the job's token, as a compromised or buggy worker would)
 * sends its right neighbour a chunk with NaN in it, then one for the wrong step, then one larger
 * than the job's chunk limit; an outsider calls a worker's peer endpoint without the token and
 * with a wrong one. Each is refused by the worker it talks to, the rogue is dropped as the
 * member its neighbour names, and the job carries on to the end with the honest workers.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type ClientDuplexStream,
  credentials,
  Metadata,
  Server,
  ServerCredentials,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import {
  CHANNEL_OPTIONS,
  CoordinatorClient,
  crc32,
  createTokenInterceptor,
  DataType,
  type JoinResponse,
  PeerServiceClient,
  PeerServiceService,
  PROTOCOL_VERSION,
  type RingFormation,
  RingPhase,
  type RingRequest,
  type StepAssignment,
  type TrainRequest,
  type TrainResponse,
} from '@shardline/protocol';
import { ringSegments } from '@shardline/training';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { joinRequest } from './joinRequest.js';
import { killStarted, startProcess, within, workerCli } from './processes.js';
import { cliPath } from './runCli.js';

const TOKEN = 'ring-rogue-token-0123456789abcdef';
let out: string;
beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), 'shardline-ring-rogue-'));
});
afterEach(() => killStarted());
afterAll(async () => {
  await rm(out, { recursive: true, force: true });
});

type Misdeed = 'nan' | 'wrong-step' | 'oversized';

/** A peer endpoint that takes whatever its left neighbour sends and never complains. */
async function startSilentPeer(): Promise<{ address: string; close(): void }> {
  const server = new Server();
  server.addService(PeerServiceService, {
    ring(call: { on(event: string, f: () => void): void }, callback: (e: null, r: object) => void) {
      call.on('data', () => {});
      call.on('error', () => {});
      call.on('end', () => callback(null, { chunksReceived: 0n }));
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  return { address: `127.0.0.1:${port}`, close: () => server.forceShutdown() };
}

/**
 * Sends the rogue's first reduce-scatter chunk to its right neighbour, spoiled by `misdeed`:
 * everything else (hello, ring, rank, offsets, CRC) is what the neighbour expects.
 */
function misbehave(
  misdeed: Misdeed,
  job: { jobId: string; parameterCount: number; maxChunkBytes: number },
  a: StepAssignment,
  ring: RingFormation,
  workerId: string,
): void {
  const right = ring.members[(a.rank + 1) % a.worldSize]!;
  const peer = new PeerServiceClient(right.peerAddress, credentials.createInsecure(), {
    ...CHANNEL_OPTIONS,
    interceptors: [createTokenInterceptor(TOKEN)],
  });
  const call = peer.ring((error) => {
    if (error) peer.close();
  });
  call.on('error', () => {});
  const segment = ringSegments(job.parameterCount, a.worldSize)[a.rank]!;
  // Oversized: past the job's chunk limit (gRPC's own limit is far larger, so the worker's
  // check is what refuses it).
  const count =
    misdeed === 'oversized'
      ? job.maxChunkBytes / 4 + 1024
      : Math.min(segment.size, job.maxChunkBytes / 4);
  const values = new Float32Array(count).fill(0.01);
  if (misdeed === 'nan') values[Math.floor(count / 2)] = Number.NaN;
  const data = Buffer.from(values.buffer);
  const send = (m: RingRequest) => call.write(m);
  send({
    kind: {
      $case: 'hello',
      value: {
        protocolVersion: PROTOCOL_VERSION,
        jobId: job.jobId,
        ringId: ring.ringId,
        senderRank: a.rank,
        worldSize: a.worldSize,
        senderWorkerId: workerId,
      },
    },
  });
  send({
    kind: {
      $case: 'chunk',
      value: {
        step: misdeed === 'wrong-step' ? a.step + 7n : a.step,
        phase: RingPhase.REDUCE_SCATTER,
        round: 0,
        segment: a.rank,
        chunk: 0,
        offset: BigInt(segment.start),
        count,
        samples: 1n,
        dtype: DataType.FLOAT32,
        data,
        crc32: crc32(data),
      },
    },
  });
}

/**
 * One session of the rogue member: joins, attaches, and at its first ring assignment commits
 * `misdeed`; resolves with the ring formation it misbehaved in (none when the coordinator ended
 * its stream first) once the coordinator ends its stream.
 */
async function rogueSession(
  address: string,
  peerAddress: string,
  misdeed: Misdeed,
  onFormation: (ring: RingFormation) => Promise<void>,
): Promise<RingFormation | undefined> {
  const client = new CoordinatorClient(address, credentials.createInsecure(), {
    ...CHANNEL_OPTIONS,
    interceptors: [createTokenInterceptor(TOKEN)],
  });
  try {
    const joined = await new Promise<JoinResponse>((resolve, reject) =>
      client.join(
        joinRequest({
          workerName: `rogue-${misdeed}`,
          capabilities: ['evaluate', 'exchange.ring'],
          peerAddress,
        }),
        new Metadata(),
        (e, r) => (e ? reject(e) : resolve(r)),
      ),
    );
    const job = joined.job!;
    const call: ClientDuplexStream<TrainRequest, TrainResponse> = client.train();
    call.write({ kind: { $case: 'attach', value: { workerId: joined.workerId } } });
    let formation: RingFormation | undefined;
    try {
      for await (const message of call as AsyncIterable<TrainResponse>) {
        const kind = message.kind;
        if (kind?.$case === 'assignment' && kind.value.ring && !formation) {
          formation = kind.value.ring;
          await onFormation(formation);
          misbehave(misdeed, job, kind.value, formation, joined.workerId);
        }
        if (kind?.$case === 'stop') break;
      }
    } catch (error) {
      // The coordinator cut the stream off when it dropped the rogue: that is the point.
      if ((error as ServiceError).code === undefined) throw error;
    }
    call.end();
    return formation;
  } finally {
    client.close();
  }
}

/** A Ring call on a worker's peer endpoint with `token` (or none): resolves with its status code. */
function outsiderCall(peerAddress: string, token: string | undefined): Promise<number> {
  const peer = new PeerServiceClient(peerAddress, credentials.createInsecure(), {
    ...CHANNEL_OPTIONS,
    ...(token ? { interceptors: [createTokenInterceptor(token)] } : {}),
  });
  return new Promise<number>((resolve) => {
    const call = peer.ring((error) => {
      peer.close();
      resolve(error ? error.code : status.OK);
    });
    call.on('error', () => {});
    call.write({
      kind: {
        $case: 'hello',
        value: {
          protocolVersion: PROTOCOL_VERSION,
          jobId: 'whatever',
          ringId: 'ring-1',
          senderRank: 0,
          worldSize: 2,
          senderWorkerId: 'outsider',
        },
      },
    });
    call.end();
  });
}

describe('rogue peers in ring mode', () => {
  it('are refused by the worker they talk to, the rogue member is dropped, and the job finishes', {
    timeout: 540_000,
  }, async () => {
    const env = { SHARDLINE_TOKEN: TOKEN };
    const coordinator = startProcess(
      cliPath,
      [
        'train',
        '--model',
        'mlp',
        // Long enough (192 steps) to outlast three rogue sessions on a loaded machine.
        '--epochs',
        '4',
        '--batch-size',
        '64',
        '--limit-train',
        '3072',
        '--limit-test',
        '300',
        '--exchange',
        'ring',
        '--local-workers',
        '0',
        '--min-workers',
        '3',
        '--worker-timeout',
        '15',
        '--listen',
        '127.0.0.1:0',
        '--log-format',
        'json',
        '--out',
        join(out, 'run'),
      ],
      { env },
    );
    const started = await within(coordinator.event('started'), 60_000, 'the coordinator start');
    const address = String(started.listen);
    for (const name of ['honest-a', 'honest-b', 'honest-c']) {
      startProcess(
        workerCli,
        ['--coordinator', address, '--name', name, '--backend', 'wasm', '--log-level', 'warn'],
        { env },
      );
    }
    // Let the honest ring form and train a little, then send the rogue in, once per misdeed.
    await within(
      (async () => {
        while (coordinator.events.filter((e) => e.event === 'worker_joined').length < 3) {
          if (coordinator.child.exitCode !== null) throw new Error(coordinator.stderr());
          await new Promise((r) => setTimeout(r, 100));
        }
      })(),
      120_000,
      'three honest workers',
    );
    await new Promise((r) => setTimeout(r, 3000));
    const silent = await startSilentPeer();
    const formations: RingFormation[] = [];
    const refusals: number[] = [];
    // An outsider without the token, or with the wrong one, is refused by every honest worker
    // (asked while the ring that includes the rogue is running, so every endpoint is up).
    const callOutsiders = async (ring: RingFormation) => {
      if (refusals.length > 0) return;
      for (const member of ring.members.filter((m) => m.peerAddress !== silent.address)) {
        refusals.push(await outsiderCall(member.peerAddress, undefined));
        refusals.push(await outsiderCall(member.peerAddress, `${TOKEN}-not`));
      }
    };
    for (const misdeed of ['nan', 'wrong-step', 'oversized'] as const) {
      // A rogue that joins just before an epoch's end is asked to evaluate first; it never
      // answers, so the coordinator drops it as silent (after --worker-timeout) before any ring
      // assignment. It then joins again, until it gets to misbehave in a ring.
      const misbehaved = (async () => {
        for (;;) {
          const formation = await rogueSession(address, silent.address, misdeed, callOutsiders);
          if (formation) return formation;
          if (coordinator.child.exitCode !== null) {
            throw new Error(`the job ended before rogue-${misdeed} got a ring assignment`);
          }
        }
      })();
      // Seconds here; a loaded CI machine gets two minutes, and a miss shows the coordinator's log.
      formations.push(
        await within(misbehaved, 120_000, misdeed).catch((error: Error) => {
          throw new Error(
            `${error.message}; the coordinator's log:\n${coordinator.stderr().slice(-6000)}`,
          );
        }),
      );
    }
    silent.close();
    expect(formations).toHaveLength(3);
    expect(refusals).toEqual(Array(6).fill(status.UNAUTHENTICATED));

    expect(await within(coordinator.closed, 240_000, 'the job')).toBe(0);
    const done = coordinator.events.at(-1)!;
    expect(done).toMatchObject({ event: 'done', step: 192 });
    expect(done.test_accuracy as number).toBeGreaterThan(0.5);
    const log = coordinator.stderr();
    // Each misdeed was named by the neighbour that refused it, and the rogue dropped for it.
    expect(log).toMatch(/rogue-nan[\s\S]*(NaN|non-finite|finite)/i);
    expect(log).toMatch(/rogue-wrong-step[\s\S]*step/i);
    expect(log).toMatch(/rogue-oversized[\s\S]*(larger|too large|RESOURCE_EXHAUSTED|bytes)/i);
    for (const e of coordinator.events.filter((e) => e.event === 'epoch_end')) {
      expect(e.replica_checksum).toMatch(/^[0-9a-f]{8}$/);
    }
  });
});
