/**
 * fetchDatasetFile over real gRPC against a stand-in coordinator: a grpc-js server on
 * 127.0.0.1:0 whose FetchDataset streams a real file the way the coordinator's serveDatasetFile
 * does (apps do not import each other, so the coordinator's handler is tested in apps/coordinator).
 * The stand-in can break, end, corrupt or refuse a call, to drive the worker's resume, checks
 * and cancellation. The files are real: a header, random bytes and a SHA-256 trailer, in /tmp.
 */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  credentials,
  Metadata,
  Server,
  ServerCredentials,
  type ServerWritableStream,
  status,
} from '@grpc/grpc-js';
import { createLogger, hasErrorCode, ShardlineError } from '@shardline/core';
import {
  CoordinatorClient,
  type CoordinatorServiceClient,
  CoordinatorServiceService,
  crc32,
  type FetchDatasetRequest,
  type FetchDatasetResponse,
  toGrpcStatus,
} from '@shardline/protocol';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { fetchDatasetFile } from '../src/datasetFetch.js';

const WORKER = 'worker-1';
const FINGERPRINT = 'c'.repeat(64);
const CHUNK = 262_144;

/** A cache file as @shardline/datasets writes it: magic, version, header, body, SHA-256. */
function datasetFileBytes(bodyBytes: number): Buffer {
  const header = Buffer.from(JSON.stringify({ fingerprint: FINGERPRINT }), 'utf8');
  const prefix = Buffer.alloc(16);
  prefix.write('SLIMGFLD', 0, 'latin1');
  prefix.writeUInt32LE(1, 8);
  prefix.writeUInt32LE(header.length, 12);
  const content = Buffer.concat([prefix, header, randomBytes(bodyBytes)]);
  return Buffer.concat([content, createHash('sha256').update(content).digest()]);
}

/** What the stand-in does with chunk `index` of call `call` (both from 0). */
type ChunkAction = FetchDatasetResponse | 'break' | 'end';
type Behaviour = (chunk: {
  call: number;
  index: number;
  message: FetchDatasetResponse;
}) => ChunkAction;

let dir: string;
let server: Server;
let client: CoordinatorServiceClient;
/** The file the stand-in serves; tests may swap it. */
let served: Buffer;
let behaviour: Behaviour;
/** Refuse every call with this error instead of serving. */
let refusal: ShardlineError | undefined;
let requests: FetchDatasetRequest[];
let destination: string;
let testNumber = 0;

/**
 * The stand-in's FetchDataset, shaped like serveDatasetFile: chunks from the offset with offset,
 * total and CRC-32, waiting for 'drain'; `behaviour` may replace a chunk, break the call with
 * UNAVAILABLE (as a dropped connection reads to the worker) or end it early with OK.
 */
async function fetchDataset(
  call: ServerWritableStream<FetchDatasetRequest, FetchDatasetResponse>,
): Promise<void> {
  const callNumber = requests.push(call.request) - 1;
  if (refusal) {
    call.emit('error', toGrpcStatus(refusal));
    return;
  }
  const file = served;
  let position = Number(call.request.offset);
  for (let index = 0; position < file.length && !call.cancelled; index++) {
    const data = file.subarray(position, position + CHUNK);
    const message = {
      offset: BigInt(position),
      data,
      totalBytes: BigInt(file.length),
      crc32: crc32(data),
    };
    const action = behaviour({ call: callNumber, index, message });
    if (action === 'break') {
      call.emit('error', {
        code: status.UNAVAILABLE,
        details: 'Connection reset by peer',
        metadata: new Metadata(),
      });
      return;
    }
    if (action === 'end') break;
    position += data.length;
    if (!call.write(action)) {
      await Promise.race([once(call, 'drain'), once(call, 'cancelled')]);
    }
  }
  if (!call.cancelled) call.end();
}

beforeAll(async () => {
  dir = await mkdtemp('/tmp/dsx-worker-');
  server = new Server();
  // Only FetchDataset: grpc-js answers the other methods with UNIMPLEMENTED.
  server.addService(CoordinatorServiceService, {
    fetchDataset: (call: ServerWritableStream<FetchDatasetRequest, FetchDatasetResponse>) => {
      void fetchDataset(call);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  client = new CoordinatorClient(`127.0.0.1:${port}`, credentials.createInsecure());
  served = datasetFileBytes(3 * 1024 * 1024 + 777);
});

afterAll(async () => {
  client?.close();
  server?.forceShutdown();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(() => {
  behaviour = ({ message }) => message;
  refusal = undefined;
  requests = [];
  // A fresh, not yet existing folder per test: fetchDatasetFile creates it.
  destination = join(dir, `run-${++testNumber}`, 'cache', 'dataset.slimg');
});

const silent = createLogger({ level: 'silent' });

function fetch(extra: Partial<Parameters<typeof fetchDatasetFile>[1]> = {}) {
  return fetchDatasetFile(client, {
    workerId: WORKER,
    fingerprint: FINGERPRINT,
    totalBytes: served.length,
    destination,
    logger: silent,
    ...extra,
  });
}

/** The error a promise rejects with. */
async function rejection(promise: Promise<unknown>): Promise<ShardlineError> {
  try {
    await promise;
  } catch (error) {
    return error as ShardlineError;
  }
  throw new Error('expected a rejection');
}

describe('fetchDatasetFile', () => {
  it('fetches the file byte for byte, reporting progress after each chunk, and leaves no partial file', async () => {
    const progress: Array<[number, number]> = [];
    const result = await fetch({
      onProgress: (received, total) => progress.push([received, total]),
    });
    expect(result).toEqual({ path: destination, bytes: served.length, resumedFrom: [] });
    expect((await readFile(destination)).equals(served)).toBe(true);
    expect(existsSync(`${destination}.partial`)).toBe(false);
    expect(progress).toHaveLength(Math.ceil(served.length / CHUNK));
    expect(progress.map(([received]) => received)).toEqual(
      progress.map((_, i) => Math.min((i + 1) * CHUNK, served.length)),
    );
    expect(progress.every(([, total]) => total === served.length)).toBe(true);
    expect(requests.map((r) => r.offset)).toEqual([0n]);
  });

  it('logs progress at info level at most once per tenth, with bytes/s', async () => {
    const lines: string[] = [];
    const logger = createLogger({
      level: 'info',
      format: 'json',
      sink: { write: (l) => lines.push(l) },
    });
    await fetch({ logger });
    const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const progress = records.filter((r) => r.msg === 'fetching dataset' && 'percent' in r);
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.length).toBeLessThanOrEqual(10);
    for (const r of progress) expect(r.bytes_per_second).toBeGreaterThan(0);
    expect(records.at(-1)).toMatchObject({ msg: 'fetched dataset', bytes: served.length });
  });

  it('asks again from where a broken stream stopped and records the offset in resumedFrom', async () => {
    behaviour = ({ call, index, message }) => (call === 0 && index === 3 ? 'break' : message);
    const result = await fetch();
    expect(result.resumedFrom).toEqual([3 * CHUNK]);
    expect(requests.map((r) => r.offset)).toEqual([0n, BigInt(3 * CHUNK)]);
    expect((await readFile(destination)).equals(served)).toBe(true);
  });

  it('asks again when a stream ends with OK before the last byte', async () => {
    behaviour = ({ call, index, message }) => (call === 0 && index === 5 ? 'end' : message);
    const result = await fetch();
    expect(result.resumedFrom).toEqual([5 * CHUNK]);
    expect((await readFile(destination)).equals(served)).toBe(true);
  });

  it('resumes from a partial file an earlier run left', async () => {
    const kept = 1_000_001;
    await mkdir(dirname(destination), { recursive: true });
    await writeFile(`${destination}.partial`, served.subarray(0, kept));
    const result = await fetch();
    expect(result.resumedFrom).toEqual([kept]);
    expect(requests.map((r) => r.offset)).toEqual([BigInt(kept)]);
    expect((await readFile(destination)).equals(served)).toBe(true);
    expect(existsSync(`${destination}.partial`)).toBe(false);
  });

  it('fails with DATA_CORRUPT on a chunk whose bytes do not match its CRC, and deletes the partial file', async () => {
    behaviour = ({ index, message }) => {
      if (index !== 2) return message;
      const data = Buffer.from(message.data); // keeps the CRC of the original bytes
      data[1234] = (data[1234] ?? 0) ^ 0x01;
      return { ...message, data };
    };
    const error = await rejection(fetch());
    expect(error.code).toBe('DATA_CORRUPT');
    expect(error.message).toContain(`bytes at ${(2 * CHUNK).toLocaleString('en-US')}`);
    expect(error.message).toMatch(/expected CRC-32 0x[0-9a-f]{8} .*, found 0x[0-9a-f]{8}/);
    expect(existsSync(destination)).toBe(false);
    expect(existsSync(`${destination}.partial`)).toBe(false);
  });

  it('fails with DATA_CORRUPT on a chunk that does not start where the file ends', async () => {
    behaviour = ({ index, message }) =>
      index === 1 ? { ...message, offset: message.offset + 1n } : message;
    const error = await rejection(fetch());
    expect(error.code).toBe('DATA_CORRUPT');
    expect(error.message).toContain(
      `expected the chunk at byte ${CHUNK.toLocaleString('en-US')}, found one at byte ${(CHUNK + 1).toLocaleString('en-US')}`,
    );
    expect(existsSync(`${destination}.partial`)).toBe(false);
  });

  it('fails with DATA_CORRUPT when the SHA-256 trailer does not match, leaving no file behind', async () => {
    const good = served;
    served = Buffer.from(good);
    served[served.length - 1] = (served[served.length - 1] ?? 0) ^ 0xff;
    try {
      const error = await rejection(fetch());
      expect(error.code).toBe('DATA_CORRUPT');
      expect(error.message).toContain('fails its checksum');
      expect(existsSync(destination)).toBe(false);
      expect(existsSync(`${destination}.partial`)).toBe(false);
    } finally {
      served = good;
    }
  });

  it('passes a refusal on without retrying', async () => {
    refusal = new ShardlineError('NOT_FOUND', 'Unknown worker id "worker-1": join first.');
    const error = await rejection(fetch());
    expect(hasErrorCode(error, 'NOT_FOUND')).toBe(true);
    expect(error.message).toContain('join first');
    expect(requests).toHaveLength(1);
  });

  // Bounded: a fetch that never gives up would otherwise run into the suite's 120 s timeout.
  it('gives up after maxAttempts requests in a row that receive nothing, keeping the partial file', {
    timeout: 5000,
  }, async () => {
    behaviour = ({ call, index, message }) =>
      call === 0 && index === 2 ? 'break' : call > 0 ? 'break' : message;
    const error = await rejection(fetch({ maxAttempts: 2 }));
    expect(error.code).toBe('CONNECTION_LOST');
    expect(error.message).toContain('failed 2 times in a row');
    // The first call made progress, so it does not count: two more calls without any.
    expect(requests.map((r) => r.offset)).toEqual([0n, BigInt(2 * CHUNK), BigInt(2 * CHUNK)]);
    expect((await stat(`${destination}.partial`)).size).toBe(2 * CHUNK);
  });

  it('stops with CANCELLED when the signal aborts, keeps the partial file, and a later fetch resumes from it', async () => {
    const controller = new AbortController();
    const error = await rejection(
      fetch({ signal: controller.signal, onProgress: () => controller.abort() }),
    );
    expect(error.code).toBe('CANCELLED');
    expect(error.message).toContain('is kept');
    expect(existsSync(destination)).toBe(false);
    const kept = (await stat(`${destination}.partial`)).size;
    expect(kept).toBe(CHUNK);
    const result = await fetch();
    expect(result.resumedFrom).toEqual([kept]);
    expect((await readFile(destination)).equals(served)).toBe(true);
  });
});
