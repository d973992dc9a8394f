/**
 * A worker's ring member (ringMember.ts) against a rogue left neighbour over real gRPC: what its
 * step outcome tells the coordinator. What it guards: a failure that began at the left
 * neighbour (a chunk that fails its CRC, a chunk with non-finite values or from another step)
 * names that neighbour as suspect; a stream that only broke off names nobody, because that is
 * how any member's failure reaches every other; this worker's own failures (its computation, a
 * replica at another version) are its own to report (a WorkerError), and still end the
 * formation at once so that the neighbours do not wait for it; an aborted step reports nothing;
 * and nothing of a failed step is staged.
 */
import { credentials, ServerCredentials, type ServiceError } from '@grpc/grpc-js';
import { type ParamLayout, ShardlineError, silentLogger } from '@shardline/core';
import {
  CHANNEL_OPTIONS,
  createTokenInterceptor,
  DataType,
  Exchange,
  type JobSpec,
  PeerServiceClient,
  PROTOCOL_VERSION,
  type RingChunk,
  type RingResponse,
  replicaStateChunks,
  type StepAssignment,
} from '@shardline/protocol';
import {
  createReplica,
  type RingLink,
  type RingMessage,
  ringAllReduce,
  type ShareResult,
} from '@shardline/training';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ringChunkOf } from '../src/peer/grpcRingLink.js';
import { localAddressTowards, startPeerEndpoint } from '../src/peer/peerEndpoint.js';
import { type PeerServer, startPeerServer } from '../src/peer/peerServer.js';
import { createRingMember, type RingMember, type RingStepOutcome } from '../src/ringMember.js';

const TOKEN = 'ring-member-token-0123456789abcdef';
const SIZE = 64;
const CHUNK_BYTES = 262_144;
const layout: ParamLayout = { slots: [], size: SIZE, fingerprint: '0123456789abcdef' };
const job: JobSpec = {
  jobId: 'job-ring-member',
  modelName: 'none',
  datasetName: 'none',
  seed: 1,
  globalBatchSize: 2,
  epochs: 1,
  gradientDtype: DataType.FLOAT32,
  weightsDtype: DataType.FLOAT32,
  maxChunkBytes: CHUNK_BYTES,
  layoutFingerprint: layout.fingerprint,
  parameterCount: SIZE,
  limitTrain: 0,
  limitTest: 0,
  augment: false,
  evalBatchSize: 1,
  hyperparameters: {},
  model: undefined,
  plugins: [],
  dataset: undefined,
  exchange: Exchange.RING,
  optimizer: { kind: 'sgd', momentum: 0, weightDecay: 0 },
};

let own: PeerServer;
/** The rogue's own endpoint: where this member's outgoing stream goes, and is left waiting. */
let rogueServer: PeerServer;
const cleanups: (() => unknown)[] = [];

beforeAll(async () => {
  const start = () =>
    startPeerServer({
      listen: '127.0.0.1:0',
      credentials: ServerCredentials.createInsecure(),
      token: TOKEN,
      maxMessageBytes: CHUNK_BYTES,
      logger: silentLogger,
      helloWaitMs: 2_000,
    });
  [own, rogueServer] = await Promise.all([start(), start()]);
});
afterAll(async () => {
  await Promise.all([own?.close(), rogueServer?.close()]);
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A member at weights version `version` (an SGD replica of SIZE parameters). */
function member(version = 0): RingMember {
  const m = createRingMember({
    job,
    layout,
    workerId: 'honest',
    server: own,
    token: TOKEN,
    logger: silentLogger,
  });
  const source = createReplica({
    size: SIZE,
    optimizer: { kind: 'sgd', momentum: 0, weightDecay: 0 },
  });
  source.load({
    version,
    params: new Float32Array(SIZE).fill(0.5),
    optimizer: { kind: 'sgd', step: version, config: { weightDecay: 0 }, slots: {} },
  });
  for (const chunk of replicaStateChunks(source.state(), layout.fingerprint)) m.receiveState(chunk);
  expect(m.replica.version).toBe(version);
  cleanups.push(() => m.close());
  return m;
}

let rings = 0;
/** Step 0 with this member at rank 1 of 2 and the rogue (worker "rogue") at rank 0. */
function assignment(step = 0): StepAssignment {
  rings += 1;
  return {
    step: BigInt(step),
    epoch: 0,
    stepInEpoch: step,
    rank: 1,
    worldSize: 2,
    globalBatchSize: 2,
    weightsVersion: BigInt(step),
    ring: {
      ringId: `ring-${rings}`,
      members: [
        { workerId: 'rogue', peerAddress: rogueServer.address },
        { workerId: 'honest', peerAddress: own.address },
      ],
    },
  };
}

const share = async (): Promise<ShareResult> => ({
  gradient: new Float32Array(SIZE).fill(0.25),
  sampleCount: 1,
  loss: 0.7,
  correct: 1,
  computeSeconds: 0.001,
});

/** The rogue's raw Ring stream to this member's endpoint, with the job's token. */
function rogueStream(ringId: string) {
  const client = new PeerServiceClient(own.address, credentials.createInsecure(), {
    ...CHANNEL_OPTIONS,
    interceptors: [createTokenInterceptor(TOKEN)],
  });
  let resolveEnd: (value: ServiceError | RingResponse) => void = () => {};
  const ended = new Promise<ServiceError | RingResponse>((resolve) => {
    resolveEnd = resolve;
  });
  const call = client.ring((error, response) => resolveEnd(error ?? response));
  call.on('error', () => {});
  cleanups.push(() => {
    call.cancel();
    client.close();
  });
  call.write({
    kind: {
      $case: 'hello',
      value: {
        protocolVersion: PROTOCOL_VERSION,
        jobId: job.jobId,
        ringId,
        senderRank: 0,
        worldSize: 2,
        senderWorkerId: 'rogue',
      },
    },
  });
  return {
    chunk: (chunk: RingChunk) => call.write({ kind: { $case: 'chunk', value: chunk } }),
    cancel: () => call.cancel(),
    ended,
  };
}

/** The first message rank 0 sends in step `step`: what rank 1 expects first. */
async function firstMessage(step: number): Promise<RingMessage> {
  let captured: RingMessage | undefined;
  const capture: RingLink = {
    send: async (message) => {
      captured = message;
      throw new Error('captured');
    },
    next: (signal) =>
      new Promise((_, reject) => signal?.addEventListener('abort', () => reject(signal.reason))),
    abort() {},
  };
  await ringAllReduce({
    rank: 0,
    worldSize: 2,
    link: capture,
    gradient: new Float32Array(SIZE).fill(1),
    sampleCount: 1,
    step,
    maxChunkBytes: CHUNK_BYTES,
  }).catch(() => {});
  return captured!;
}

function failureOf(outcome: RingStepOutcome): { failure: string; suspect: string } {
  expect(outcome.kind).toBe('reported');
  const report = (outcome as Extract<RingStepOutcome, { kind: 'reported' }>).report;
  expect(report.checksum).toBe('');
  return { failure: report.failure, suspect: report.suspectWorkerId };
}

describe('who a failed all-reduce names as suspect', () => {
  it('the left neighbour, when its chunk fails the CRC check', async () => {
    const m = member();
    const a = assignment();
    const running = m.runStep(a, share, new AbortController().signal);
    const rogue = rogueStream(a.ring!.ringId);
    const chunk = ringChunkOf(await firstMessage(0));
    rogue.chunk({ ...chunk, crc32: (chunk.crc32 + 1) >>> 0 });
    const { failure, suspect } = failureOf(await running);
    expect(suspect).toBe('rogue');
    expect(failure).toMatch(/fails its checksum/);
    expect(m.replica.staged).toBeUndefined();
  });

  it('the left neighbour, when its chunk holds non-finite values (with a valid CRC)', async () => {
    const m = member();
    const a = assignment();
    const running = m.runStep(a, share, new AbortController().signal);
    const rogue = rogueStream(a.ring!.ringId);
    const message = await firstMessage(0);
    const poisoned = new Float32Array(message.count).fill(Number.NaN);
    rogue.chunk(ringChunkOf({ ...message, data: new Uint8Array(poisoned.buffer) }));
    const { failure, suspect } = failureOf(await running);
    expect(suspect).toBe('rogue');
    expect(failure).toMatch(/refused the message from rank 0 \(left neighbour\).*NaN/);
  });

  it('the left neighbour, when its chunk belongs to another step', async () => {
    const m = member();
    const a = assignment();
    const running = m.runStep(a, share, new AbortController().signal);
    rogueStream(a.ring!.ringId).chunk(ringChunkOf(await firstMessage(5)));
    const { failure, suspect } = failureOf(await running);
    expect(suspect).toBe('rogue');
    expect(failure).toMatch(/belongs to step 5, expected step 0/);
  });

  it('nobody, when the left neighbour\u2019s stream only broke off', async () => {
    const m = member();
    const a = assignment();
    const running = m.runStep(a, share, new AbortController().signal);
    const rogue = rogueStream(a.ring!.ringId);
    // Let the hello bind before the stream goes away.
    await new Promise((resolve) => setTimeout(resolve, 200));
    rogue.cancel();
    const { failure, suspect } = failureOf(await running);
    expect(suspect).toBe('');
    expect(failure).toMatch(/closed its stream|broke off/);
  });
});

describe("this worker's own failures", () => {
  it('a computation that throws is the worker\u2019s error, and the formation ends at once for the neighbours', async () => {
    const m = member();
    const a = assignment();
    const rogue = rogueStream(a.ring!.ringId);
    const outcome = await m.runStep(
      a,
      async () => {
        throw new ShardlineError('NUMERIC', 'the loss is NaN');
      },
      new AbortController().signal,
    );
    expect(outcome).toMatchObject({ kind: 'failed', error: { code: 'NUMERIC' } });
    // The left neighbour's stream is answered with the failure instead of waiting for a deadline.
    const answer = await rogue.ended;
    expect('code' in answer).toBe(true);
  });

  it('a replica at another version refuses the step (MISMATCH) without computing', async () => {
    const m = member(3);
    let computed = false;
    const outcome = await m.runStep(
      assignment(4),
      async () => {
        computed = true;
        return share();
      },
      new AbortController().signal,
    );
    expect(outcome).toMatchObject({ kind: 'failed', error: { code: 'MISMATCH' } });
    expect((outcome as { error: Error }).error.message).toMatch(
      /assigned at weights version 4, but this worker's replica holds version 3/,
    );
    expect(computed).toBe(false);
  });

  it('a step the coordinator aborts while it waits on a neighbour reports nothing', async () => {
    const m = member();
    const controller = new AbortController();
    const running = m.runStep(assignment(), share, controller.signal);
    await new Promise((resolve) => setTimeout(resolve, 100));
    controller.abort(new ShardlineError('CANCELLED', 'AbortStep'));
    expect((await running).kind).toBe('aborted');
    expect(m.replica.staged).toBeUndefined();
  });
});

describe('the peer endpoint', () => {
  it('listens on 127.0.0.1 for a coordinator on loopback and advertises the bound port', async () => {
    const peer = await startPeerEndpoint({
      settings: {},
      coordinator: 'localhost:7070',
      logger: silentLogger,
      probe: async () => {
        throw new Error('no probe for a loopback coordinator');
      },
    });
    cleanups.push(() => peer.close());
    expect(peer.server.address).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(peer.advertised).toBe(peer.server.address);
  });

  it('listens on every interface for a remote coordinator and advertises the route\u2019s address', async () => {
    const probed: string[] = [];
    const peer = await startPeerEndpoint({
      settings: { listen: 'auto' },
      coordinator: '10.9.8.7:7070',
      logger: silentLogger,
      probe: async (host, port) => {
        probed.push(`${host}:${port}`);
        return '127.0.0.1';
      },
    });
    cleanups.push(() => peer.close());
    expect(probed).toEqual(['10.9.8.7:7070']);
    expect(peer.server.address).toMatch(/^0\.0\.0\.0:\d+$/);
    expect(peer.advertised).toBe(`127.0.0.1:${peer.server.port}`);
  });

  it('asks the kernel which local address a route leaves from, sending nothing', async () => {
    expect(await localAddressTowards('127.0.0.1', 7070)).toBe('127.0.0.1');
    expect(await localAddressTowards('localhost', 7070)).toMatch(/^(127\.0\.0\.1|::1)$/);
  });

  it('advertises what --peer-advertise says, for NAT and containers', async () => {
    const peer = await startPeerEndpoint({
      settings: { listen: '127.0.0.1:0', advertise: 'worker-1.example:7071' },
      coordinator: '10.9.8.7:7070',
      logger: silentLogger,
    });
    cleanups.push(() => peer.close());
    expect(peer.advertised).toBe('worker-1.example:7071');
  });
});
