/**
 * The ring all-reduce over real gRPC on 127.0.0.1: every member has its own peer endpoint
 * (startPeerServer on port 0) and a createGrpcRingLink to its right neighbour, all in this one
 * process. What it guards: results bit-identical on every member and equal to the weighted
 * average within the algorithm's documented bound; a rogue peer refused by the worker it talks
 * to (token, hello, step, NaN, size, CRC) without leaving any member hanging; an aborted member
 * settling every member's promise within a bound; backpressure on the sending side; and
 * endpoints that close without leaving sockets behind.
 */
import { credentials, ServerCredentials, type ServiceError, status } from '@grpc/grpc-js';
import { isShardlineError, type ShardlineErrorCode, silentLogger } from '@shardline/core';
import {
  CHANNEL_OPTIONS,
  crc32,
  createTokenInterceptor,
  PeerServiceClient,
  PROTOCOL_VERSION,
  type RingChunk,
  type RingHello,
  type RingResponse,
} from '@shardline/protocol';
import {
  type RingDtype,
  type RingLink,
  type RingMessage,
  type RingResult,
  ringAllReduce,
} from '@shardline/training';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createGrpcRingLink, type GrpcRingLink, ringChunkOf } from '../src/peer/grpcRingLink.js';
import { type PeerServer, startPeerServer } from '../src/peer/peerServer.js';

const TOKEN = 'peer-ring-token-0123456789abcdef';
const JOB = 'job-grpc-ring';
/** 256 float32 values per message: many messages per step, so every link pipelines. */
const CHUNK_BYTES = 1024;
/** float32 unit roundoff. */
const U = 2 ** -24;
/** How long every member may take to settle after a fault, on a loaded 2-core machine. */
const SETTLE_MS = 3_000;

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

// A rejection nobody handled would be reported after the test that leaked it; this names it.
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
beforeAll(() => {
  process.on('unhandledRejection', onUnhandled);
});
afterAll(() => {
  process.off('unhandledRejection', onUnhandled);
});
afterEach(async () => {
  await new Promise((resolve) => setTimeout(resolve, 5));
  expect(unhandled).toEqual([]);
});

interface ServerTuning {
  maxMessageBytes?: number;
  helloWaitMs?: number;
  inboundCapacity?: number;
}

async function startServers(count: number, tuning: ServerTuning = {}): Promise<PeerServer[]> {
  const servers = await Promise.all(
    Array.from({ length: count }, () =>
      startPeerServer({
        listen: '127.0.0.1:0',
        credentials: ServerCredentials.createInsecure(),
        token: TOKEN,
        maxMessageBytes: tuning.maxMessageBytes ?? CHUNK_BYTES,
        logger: silentLogger,
        helloWaitMs: tuning.helloWaitMs ?? 2_000,
        ...(tuning.inboundCapacity === undefined
          ? {}
          : { inboundCapacity: tuning.inboundCapacity }),
      }),
    ),
  );
  for (const server of servers) cleanups.push(() => server.close());
  return servers;
}

let formations = 0;

/** One link per member, rank r sending to rank r + 1; closed after the test. */
function formRing(servers: PeerServer[], ringId = `ring-${++formations}`): GrpcRingLink[] {
  const worldSize = servers.length;
  const links = servers.map((server, rank) =>
    createGrpcRingLink({
      server,
      ringId,
      jobId: JOB,
      rank,
      worldSize,
      workerId: `worker-${rank}`,
      right: {
        address: servers[(rank + 1) % worldSize]!.address,
        credentials: credentials.createInsecure(),
        token: TOKEN,
      },
      logger: silentLogger,
    }),
  );
  cleanups.push(() => Promise.all(links.map((link) => link.close())));
  return links;
}

/** Deterministic values in [-1, 1) times `scale` (mulberry32). */
function randomGradient(length: number, seed: number, scale: number): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * 2 - 1) * scale;
  }
  return out;
}

function allReduce(
  links: RingLink[],
  gradients: Float32Array[],
  counts: number[],
  step: number,
  signals: (AbortSignal | undefined)[] = [],
  dtype?: RingDtype,
): Promise<RingResult>[] {
  return links.map((link, rank) =>
    ringAllReduce({
      rank,
      worldSize: links.length,
      link,
      gradient: gradients[rank]!,
      sampleCount: counts[rank]!,
      step,
      maxChunkBytes: CHUNK_BYTES,
      ...(signals[rank] ? { signal: signals[rank] } : {}),
      ...(dtype ? { dtype } : {}),
    }),
  );
}

/**
 * Every result holds the same bytes, and each element is within (2N + 1) x 2^-24 x
 * sum(w_i |g_i|) of the float64 weighted average (ringAllReduce's documented bound).
 */
function expectAveraged(results: RingResult[], gradients: Float32Array[], counts: number[]): void {
  const n = results.length;
  const total = counts.reduce((a, b) => a + b, 0);
  const first = Buffer.from(results[0]!.gradient.buffer);
  for (const r of results) {
    expect(Buffer.from(r.gradient.buffer).equals(first)).toBe(true);
    expect(r.checksum).toBe(results[0]!.checksum);
    expect(r.samples).toBe(total);
  }
  const g0 = results[0]!.gradient;
  let worst = 0;
  for (let i = 0; i < g0.length; i++) {
    let exact = 0;
    let magnitude = 0;
    for (let k = 0; k < n; k++) {
      exact += counts[k]! * gradients[k]![i]!;
      magnitude += (counts[k]! / total) * Math.abs(gradients[k]![i]!);
    }
    exact /= total;
    const bound = (2 * n + 1) * U * magnitude;
    worst = Math.max(worst, Math.abs(g0[i]! - exact) / (bound || Number.MIN_VALUE));
  }
  // At most 1: no element beyond its bound.
  expect(worst).toBeLessThanOrEqual(1);
}

/** Settles every promise, and fails the test (naming the laggards) when that takes over `ms`. */
async function settleWithin<T>(promises: Promise<T>[], ms: number) {
  const pending = new Set(promises.map((_, i) => i));
  promises.forEach((p, i) => {
    p.then(
      () => pending.delete(i),
      () => pending.delete(i),
    );
  });
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => {
    timer = setTimeout(resolve, ms, 'late');
  });
  const outcome = await Promise.race([Promise.allSettled(promises), late]);
  clearTimeout(timer);
  if (outcome === 'late') {
    // Unblocks afterEach: the links are closed there, which rejects what still waits.
    expect.fail(`ranks ${[...pending].join(', ')} had not settled ${ms} ms after the fault`);
  }
  return outcome as PromiseSettledResult<Awaited<T>>[];
}

function codeOf(result: PromiseSettledResult<unknown>): ShardlineErrorCode | 'fulfilled' | 'other' {
  if (result.status === 'fulfilled') return 'fulfilled';
  return isShardlineError(result.reason) ? result.reason.code : 'other';
}

function messageOf(result: PromiseSettledResult<unknown>): string {
  return result.status === 'rejected' ? String((result.reason as Error).message) : '';
}

/** A rogue peer's own client: a raw PeerService.Ring stream to `address`. */
function rogueStream(address: string, token: string | undefined) {
  const client = new PeerServiceClient(address, credentials.createInsecure(), {
    ...CHANNEL_OPTIONS,
    ...(token === undefined ? {} : { interceptors: [createTokenInterceptor(token)] }),
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
  return {
    hello(fields: Partial<RingHello> = {}) {
      call.write({ kind: { $case: 'hello', value: { ...hello(), ...fields } } });
    },
    chunk(chunk: RingChunk) {
      call.write({ kind: { $case: 'chunk', value: chunk } });
    },
    end() {
      call.end();
    },
    ended,
  };
}

function hello(): RingHello {
  return {
    protocolVersion: PROTOCOL_VERSION,
    jobId: JOB,
    ringId: `ring-${formations}`,
    senderRank: 1,
    worldSize: 2,
    senderWorkerId: 'rogue',
  };
}

/** The first message `rank` would send in this all-reduce: what its right neighbour expects. */
async function firstMessage(
  rank: number,
  worldSize: number,
  gradient: Float32Array,
  sampleCount: number,
  step: number,
): Promise<RingMessage> {
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
    rank,
    worldSize,
    link: capture,
    gradient,
    sampleCount,
    step,
    maxChunkBytes: CHUNK_BYTES,
  }).catch(() => {});
  return captured!;
}

function isStatus(value: ServiceError | RingResponse): value is ServiceError {
  return 'code' in value;
}

describe('ring all-reduce over gRPC', () => {
  it.each([2, 3, 4])(
    'N = %i: two steps on one formation give every member the same bytes, the weighted average within (2N + 1) x 2^-24 x sum(w|g|)',
    async (n) => {
      const servers = await startServers(n);
      const links = formRing(servers);
      const counts = [32, 7, 1, 19].slice(0, n);
      const length = 10_007; // not a multiple of N or of the chunk: ragged segments and chunks
      for (const step of [41, 42]) {
        const gradients = counts.map((_, k) =>
          randomGradient(length, step * 10 + k, 10 ** (k - 1)),
        );
        const results = await Promise.all(allReduce(links, gradients, counts, step));
        expectAveraged(results, gradients, counts);
        // 2 (N - 1) / N of the vector's bytes, within a few bytes of ragged segments.
        for (const r of results) {
          expect(Math.abs(r.sentBytes - (2 * (n - 1) * length * 4) / n)).toBeLessThanOrEqual(8);
        }
      }
    },
  );

  it.each(['float16', 'bfloat16'] as const)(
    '%s chunks cross the wire: 3 members end with the same bytes, having sent half the float32 bytes',
    async (dtype) => {
      const servers = await startServers(3);
      const links = formRing(servers);
      const counts = [32, 7, 19];
      const length = 10_007;
      const gradients = counts.map((_, k) => randomGradient(length, 70 + k, 10 ** (k - 1)));
      const results = await Promise.all(allReduce(links, gradients, counts, 9, [], dtype));
      for (const r of results) {
        expect(r.checksum).toBe(results[0]!.checksum);
        expect(Math.abs(r.sentBytes - (2 * 2 * length * 2) / 3)).toBeLessThanOrEqual(4);
      }
      const total = counts.reduce((a, b) => a + b, 0);
      const largest = Math.max(
        ...gradients.map((g) => g.reduce((m, v) => Math.max(m, Math.abs(v)), 0)),
      );
      for (let i = 0; i < length; i += 97) {
        const exact = counts.reduce((sum, n, k) => sum + (n * gradients[k]![i]!) / total, 0);
        expect(Math.abs(results[0]!.gradient[i]! - exact)).toBeLessThanOrEqual(
          5 * 2 ** -8 * largest,
        );
      }
    },
  );
});

describe('a rogue peer is refused by the worker it talks to', () => {
  it('before its stream is bound (token, hello, order), and the ring then completes untouched', async () => {
    const servers = await startServers(2, { helloWaitMs: 200 });
    const links = formRing(servers);
    const target = servers[0]!.address; // expects rank 1 of 2 as its left neighbour
    type Opening = Partial<RingHello> | 'chunk-first' | 'silent';
    const tries: [string, string | undefined, Opening, status, RegExp][] = [
      [
        'no token',
        undefined,
        {},
        status.UNAUTHENTICATED,
        /requires the job's token on every call, and this call carried none/,
      ],
      [
        'wrong token',
        'not-the-job-token-0123456789',
        {},
        status.UNAUTHENTICATED,
        /does not match the one this worker's peer endpoint requires/,
      ],
      [
        'another job',
        TOKEN,
        { jobId: 'other-job' },
        status.FAILED_PRECONDITION,
        /job "other-job" instead of "job-grpc-ring"/,
      ],
      [
        'another sender rank',
        TOKEN,
        { senderRank: 0 },
        status.FAILED_PRECONDITION,
        /sender rank 0 instead of 1 \(this member's left neighbour\)/,
      ],
      [
        'another world size',
        TOKEN,
        { worldSize: 3 },
        status.FAILED_PRECONDITION,
        /world size 3 instead of 2/,
      ],
      [
        'another protocol version',
        TOKEN,
        { protocolVersion: 2 },
        status.FAILED_PRECONDITION,
        /protocol version mismatch: this process speaks version 3, the worker "rogue"/,
      ],
      [
        'an unknown ring',
        TOKEN,
        { ringId: 'ring-nobody-formed' },
        status.NOT_FOUND,
        /not a member of ring ring-nobody-formed \(it registered no such ring within 200 ms/,
      ],
      [
        'a chunk before the hello',
        TOKEN,
        'chunk-first',
        status.INVALID_ARGUMENT,
        /a chunk from a peer at .* before its hello was accepted/,
      ],
      [
        'no hello at all',
        TOKEN,
        'silent',
        status.INVALID_ARGUMENT,
        /a peer at .* sent no hello within 200 ms of opening the stream/,
      ],
    ];
    for (const [what, token, fields, code, message] of tries) {
      const rogue = rogueStream(target, token);
      if (fields === 'chunk-first') {
        rogue.chunk(ringChunkOf(await firstMessage(1, 2, new Float32Array(8), 1, 0)));
      } else if (fields !== 'silent') {
        rogue.hello(fields);
      }
      if (fields !== 'silent') rogue.end();
      const answer = await rogue.ended;
      expect(isStatus(answer), what).toBe(true);
      expect({ what, code: (answer as ServiceError).code }).toEqual({ what, code });
      expect((answer as ServiceError).details).toMatch(message);
    }
    const gradients = [randomGradient(3_001, 1, 1), randomGradient(3_001, 2, 1)];
    const results = await Promise.all(allReduce(links, gradients, [3, 5], 0));
    expectAveraged(results, gradients, [3, 5]);

    // The ring's stream is bound now: a second one, even with a perfect hello, is refused.
    const second = rogueStream(target, TOKEN);
    second.hello();
    second.end();
    const answer = (await second.ended) as ServiceError;
    expect(answer.code).toBe(status.FAILED_PRECONDITION);
    expect(answer.details).toMatch(
      /already receives from rank 1 \(worker "worker-1", .*\); a second stream from rank 1 \(worker "rogue"/,
    );
    // ... and the ring still works.
    const again = await Promise.all(allReduce(links, gradients, [3, 5], 1));
    expectAveraged(again, gradients, [3, 5]);
  });

  type Tamper = (m: RingChunk) => RingChunk;
  const nanAt3: Tamper = (m) => {
    const values = new Float32Array(new Uint8Array(m.data).buffer);
    values[3] = Number.NaN;
    const data = Buffer.from(values.buffer);
    return { ...m, data, crc32: crc32(data) };
  };
  const oversized: Tamper = (m) => {
    const data = Buffer.alloc(CHUNK_BYTES + 4);
    return { ...m, count: (CHUNK_BYTES + 4) / 4, data, crc32: crc32(data) };
  };
  const cases: [string, Tamper, ShardlineErrorCode, RegExp, status, RegExp][] = [
    [
      'a message of another step',
      (m) => ({ ...m, step: 99n }),
      'MISMATCH',
      /rank 0: refused the message from rank 2 \(left neighbour\): it belongs to step 99, expected step 5/,
      status.UNAVAILABLE,
      /member rank 0 .* stopped and closed its links .*step 99/,
    ],
    [
      'NaN values',
      nanAt3,
      'NUMERIC',
      /rank 0: refused the message from rank 2 \(left neighbour\): .* holds NaN at index/,
      status.UNAVAILABLE,
      /member rank 0 .* stopped and closed its links .*NaN/,
    ],
    [
      'an oversized chunk',
      oversized,
      'INVALID_ARGUMENT',
      /stream from rank 2 \(worker "rogue", .*\) .* carries 1,028 bytes, more than the 1,024 this worker accepts in one chunk/,
      status.RESOURCE_EXHAUSTED,
      /carries 1,028 bytes, more than the 1,024/,
    ],
    [
      'a bad CRC',
      (m) => ({ ...m, crc32: (m.crc32 ^ 1) >>> 0 }),
      'DATA_CORRUPT',
      /stream from rank 2 \(worker "rogue", .*\) .* fails its checksum/,
      status.DATA_LOSS,
      /fails its checksum: the sender's CRC-32 is [0-9a-f]{8}, the 1,024 bytes received give [0-9a-f]{8}/,
    ],
    [
      "a chunk beyond gRPC's message limit",
      (m) => {
        const data = Buffer.alloc(CHUNK_BYTES + 128 * 1024);
        return { ...m, data, crc32: crc32(data) };
      },
      'CONNECTION_LOST',
      /the stream from rank 2 \(worker "rogue", .*\) broke off after 0 chunks .* or gRPC refused a message over 66,560 bytes/,
      status.RESOURCE_EXHAUSTED,
      /larger than max/,
    ],
  ];

  it.each(cases)(
    'once bound, %s fails the receiving member naming the sender, and every member settles',
    async (_what, tamper, localCode, localMessage, rogueCode, rogueMessage) => {
      // Ranks 0 and 1 are honest; rank 2's place is taken by a rogue with the job's token.
      const servers = await startServers(3);
      const links = formRing(servers);
      const step = 5;
      const counts = [4, 6, 2];
      const gradients = counts.map((_, k) => randomGradient(2_000, k + 7, 1));
      const honest = [0, 1].map((rank) =>
        ringAllReduce({
          rank,
          worldSize: 3,
          link: links[rank]!,
          gradient: gradients[rank]!,
          sampleCount: counts[rank]!,
          step,
          maxChunkBytes: CHUNK_BYTES,
        }),
      );
      const first = await firstMessage(2, 3, gradients[2]!, counts[2]!, step);
      const rogue = rogueStream(servers[0]!.address, TOKEN);
      rogue.hello({ ringId: `ring-${formations}`, senderRank: 2, worldSize: 3 });
      rogue.chunk(tamper(ringChunkOf(first)));
      const settled = await settleWithin(honest, SETTLE_MS);
      expect(codeOf(settled[0]!)).toBe(localCode);
      expect(messageOf(settled[0]!)).toMatch(localMessage);
      expect(codeOf(settled[1]!)).toBe('CONNECTION_LOST');
      const answer = await rogue.ended;
      expect(isStatus(answer)).toBe(true);
      expect((answer as ServiceError).code).toBe(rogueCode);
      expect((answer as ServiceError).details).toMatch(rogueMessage);
    },
  );
});

describe('faults', () => {
  it.each([
    ['before its streams have connected', 3],
    ['in the middle of the reduce-scatter', 150],
  ])(
    'aborting one member %s settles every member within the bound, with CONNECTION_LOST',
    async (_when, stopAfter) => {
      const n = 4;
      const servers = await startServers(n);
      const links = formRing(servers);
      const length = 60_000; // 354 messages per member
      const counts = [8, 8, 8, 8];
      const gradients = counts.map((_, k) => randomGradient(length, k, 1));
      const controller = new AbortController();
      const reason = new Error('member 2 was told to stop');
      let sent = 0;
      const inner = links[2]!;
      const counting: RingLink = {
        send: async (message, signal) => {
          await inner.send(message, signal);
          if (++sent === stopAfter) controller.abort(reason);
        },
        next: (signal) => inner.next(signal),
        abort: (why) => inner.abort(why),
      };
      const promises = allReduce(
        [links[0]!, links[1]!, counting, links[3]!],
        gradients,
        counts,
        3,
        [undefined, undefined, controller.signal, undefined],
      );
      await new Promise<void>((resolve) =>
        controller.signal.addEventListener('abort', () => resolve()),
      );
      const settled = await settleWithin(promises, SETTLE_MS);
      expect(settled[2]).toEqual({ status: 'rejected', reason });
      for (const rank of [0, 1, 3]) {
        expect({ rank, code: codeOf(settled[rank]!) }).toEqual({ rank, code: 'CONNECTION_LOST' });
        // Whichever way the failure came around, it names the ring and where it broke.
        expect(messageOf(settled[rank]!)).toMatch(/^Ring ring-\d+/);
      }
    },
  );

  it('a send waits for the stream to drain while the right neighbour does not read, and rejects promptly on abort', async () => {
    const big = 256 * 1024;
    const servers = await startServers(2, { maxMessageBytes: big, inboundCapacity: 1 });
    const links = formRing(servers);
    const message = (i: number): RingMessage => ({
      step: 0,
      phase: 'reduce-scatter',
      round: 0,
      segment: 0,
      chunk: i,
      offset: 0,
      count: big / 4,
      samples: 1,
      sender: 0,
      dtype: 'float32',
      data: new Uint8Array(big),
    });
    // Nobody reads on rank 1: once gRPC's buffers and both flow-control windows are full,
    // send stops resolving.
    let sent = 0;
    let waiting: Promise<void> | undefined;
    for (; sent < 400 && !waiting; sent++) {
      const send = links[0]!.send(message(sent));
      const outcome = await Promise.race([
        send.then(() => 'sent'),
        new Promise((resolve) => setTimeout(resolve, 300, 'waiting')),
      ]);
      if (outcome === 'waiting') waiting = send;
    }
    expect(waiting).toBeDefined();
    // 16 MiB windows on both sides: it took tens of megabytes to block.
    expect(sent * big).toBeGreaterThan(16 * 1024 * 1024);
    // Reading frees room upstream, and the waiting send goes through long before everything
    // sent has been read.
    let through = false;
    void waiting!.then(() => {
      through = true;
    });
    let read = 0;
    while (!through && read < sent) {
      await links[1]!.next();
      read += 1;
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    expect(through).toBe(true);
    expect(read).toBeLessThan(sent);
    // Fill it up again, then abort a waiting send: it rejects with the signal's reason.
    const controller = new AbortController();
    let stuck: Promise<void> | undefined;
    for (let i = 0; i < 400 && !stuck; i++) {
      const send = links[0]!.send(message(i), controller.signal);
      const outcome = await Promise.race([
        send.then(() => 'sent'),
        new Promise((resolve) => setTimeout(resolve, 200, 'waiting')),
      ]);
      if (outcome === 'waiting') stuck = send;
    }
    expect(stuck).toBeDefined();
    const outcome = stuck!.then(
      () => 'sent',
      (error: unknown) => error,
    );
    const reason = new Error('gave up waiting');
    const started = performance.now();
    controller.abort(reason);
    expect(await outcome).toBe(reason);
    expect(performance.now() - started).toBeLessThan(100);
  });

  it('a closed peer endpoint fails its rings with CONNECTION_LOST and leaves no sockets open', async () => {
    const sockets = () =>
      process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'TCPServerWrap')
        .length;
    const before = sockets();
    const servers = await startServers(2);
    const links = formRing(servers);
    const gradients = [randomGradient(1_000, 3, 1), randomGradient(1_000, 4, 1)];
    await Promise.all(allReduce(links, gradients, [1, 1], 0));
    // Rank 0 waits for a message that will never come; its endpoint then shuts down.
    const waiting = links[0]!.next().then(
      () => 'received',
      (error: unknown) => error,
    );
    await servers[0]!.close();
    expect(await waiting).toMatchObject({
      code: 'CONNECTION_LOST',
      message: expect.stringMatching(/peer endpoint is shutting down/),
    });
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    // Sockets close asynchronously: give them a moment.
    for (let i = 0; i < 50 && sockets() > before; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(sockets()).toBeLessThanOrEqual(before);
  });
});
