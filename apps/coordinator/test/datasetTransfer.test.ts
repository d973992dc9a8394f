/**
 * serveDatasetFile over real gRPC: a grpc-js server on 127.0.0.1:0 whose FetchDataset calls it,
 * a real client, and a real dataset file (header, random bytes, SHA-256 trailer) in /tmp. The
 * worker's fetchDatasetFile is tested against a stand-in server in apps/worker (apps do not
 * import each other, tests included); this file covers what the coordinator promises: the
 * chunks, the refusals and their status codes, backpressure, cancellation, a file that changes
 * under it, and that the file is closed whatever happens.
 */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdirSync, readlinkSync } from 'node:fs';
import { copyFile, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type ClientReadableStream,
  credentials,
  Server,
  ServerCredentials,
  type ServerWritableStream,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { createLogger } from '@shardline/core';
import {
  CoordinatorClient,
  type CoordinatorServiceClient,
  CoordinatorServiceService,
  crc32,
  type FetchDatasetRequest,
  type FetchDatasetResponse,
  fromGrpcStatus,
} from '@shardline/protocol';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  type ServeDatasetFileOptions,
  serveDatasetFile,
} from '../src/distributed/datasetTransfer.js';

const WORKER = 'worker-1';
const FINGERPRINT = 'a'.repeat(64);
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

let dir: string;
let bytes: Buffer;
let path: string;
let server: Server;
let client: CoordinatorServiceClient;
/** What the next calls are served with; tests change it. */
let options: ServeDatasetFileOptions;
/** Every handler's promise, to wait for it to finish. */
let handlers: Promise<void>[];
/** Wraps each call before the handler sees it (to watch its writes). */
let wrap: (call: ServerWritableStream<FetchDatasetRequest, FetchDatasetResponse>) => void;

beforeAll(async () => {
  dir = await mkdtemp('/tmp/dsx-coordinator-');
  bytes = datasetFileBytes(3 * 1024 * 1024 + 12_345);
  path = join(dir, 'dataset.slimg');
  await writeFile(path, bytes);
  server = new Server();
  // Only FetchDataset: grpc-js answers the other methods with UNIMPLEMENTED.
  server.addService(CoordinatorServiceService, {
    fetchDataset: (call: ServerWritableStream<FetchDatasetRequest, FetchDatasetResponse>) => {
      wrap(call);
      handlers.push(serveDatasetFile(call, options));
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  client = new CoordinatorClient(`127.0.0.1:${port}`, credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  server?.forceShutdown();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(() => {
  handlers = [];
  wrap = () => {};
  options = {
    file: { path, fingerprint: FINGERPRINT, size: bytes.length },
    isJoined: (id) => id === WORKER,
    maxChunkBytes: CHUNK,
    logger: createLogger({ level: 'silent' }),
  };
});

afterEach(async () => {
  // The handler ends on every path, and leaves no descriptor open on the dataset file.
  expect(await settlesWithin(Promise.all(handlers), 1000)).toBe(true);
  expect(openDescriptorsOn(dir)).toEqual([]);
});

/** This process's open file descriptors on files under `folder` (Linux; empty elsewhere). */
function openDescriptorsOn(folder: string): string[] {
  if (process.platform !== 'linux') return [];
  return readdirSync('/proc/self/fd').flatMap((fd) => {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      return target.startsWith(folder) ? [target] : [];
    } catch {
      return []; // closed since the listing
    }
  });
}

function request(partial: Partial<FetchDatasetRequest> = {}): FetchDatasetRequest {
  return { workerId: WORKER, fingerprint: FINGERPRINT, offset: 0n, ...partial };
}

/** Reads a whole call: its messages, and the error it ended with, if any. */
async function collect(call: ClientReadableStream<FetchDatasetResponse>) {
  const messages: FetchDatasetResponse[] = [];
  try {
    for await (const message of call as AsyncIterable<FetchDatasetResponse>) messages.push(message);
    return { messages, error: undefined };
  } catch (error) {
    return { messages, error: error as ServiceError };
  }
}

/** Checks each chunk's offset, size, total and CRC; returns the bytes they carry. */
function checkedData(messages: FetchDatasetResponse[], start: number): Buffer {
  let at = start;
  for (const m of messages) {
    expect(m.offset).toBe(BigInt(at));
    expect(m.totalBytes).toBe(BigInt(bytes.length));
    expect(m.data.length).toBeGreaterThan(0);
    expect(m.data.length).toBeLessThanOrEqual(options.maxChunkBytes);
    expect(m.crc32).toBe(crc32(m.data));
    at += m.data.length;
  }
  return Buffer.concat(messages.map((m) => m.data));
}

describe('serveDatasetFile', () => {
  it('sends the whole file in order, in chunks of at most maxChunkBytes with offset, total and CRC-32', async () => {
    const { messages, error } = await collect(client.fetchDataset(request()));
    expect(error).toBeUndefined();
    expect(messages).toHaveLength(Math.ceil(bytes.length / CHUNK));
    expect(checkedData(messages, 0).equals(bytes)).toBe(true);
  });

  it('resumes from an offset: the first chunk starts there and the rest of the file follows', async () => {
    const offset = 1_000_003;
    const { messages, error } = await collect(client.fetchDataset(request({ offset: 1_000_003n })));
    expect(error).toBeUndefined();
    expect(messages[0]?.offset).toBe(BigInt(offset));
    expect(checkedData(messages, offset).equals(bytes.subarray(offset))).toBe(true);
  });

  it('answers an offset at the end with no chunks and status OK', async () => {
    const { messages, error } = await collect(
      client.fetchDataset(request({ offset: BigInt(bytes.length) })),
    );
    expect(error).toBeUndefined();
    expect(messages).toEqual([]);
  });

  it('refuses an unknown worker id with NOT_FOUND: join first', async () => {
    const { messages, error } = await collect(
      client.fetchDataset(request({ workerId: 'stranger' })),
    );
    expect(messages).toEqual([]);
    expect(error?.code).toBe(status.NOT_FOUND);
    const e = fromGrpcStatus(error!);
    expect(e.code).toBe('NOT_FOUND');
    expect(e.message).toContain('"stranger"');
    expect(e.message).toContain('join first');
  });

  it('refuses with FAILED_PRECONDITION when the job has no image-folder dataset to send', async () => {
    options.file = undefined;
    const { error } = await collect(client.fetchDataset(request()));
    expect(error?.code).toBe(status.FAILED_PRECONDITION);
    expect(fromGrpcStatus(error!).code).toBe('MISMATCH');
    expect(error?.details).toContain('no image-folder dataset to send');
    expect(error?.details).toContain('its own copy of the data');
  });

  it('refuses another fingerprint with FAILED_PRECONDITION, naming both', async () => {
    const other = 'b'.repeat(64);
    const { error } = await collect(client.fetchDataset(request({ fingerprint: other })));
    expect(error?.code).toBe(status.FAILED_PRECONDITION);
    expect(error?.details).toContain(other);
    expect(error?.details).toContain(FINGERPRINT);
  });

  it('refuses an offset past the end with OUT_OF_RANGE, and INVALID_ARGUMENT for Shardline peers', async () => {
    const { error } = await collect(
      client.fetchDataset(request({ offset: BigInt(bytes.length + 1) })),
    );
    expect(error?.code).toBe(status.OUT_OF_RANGE);
    expect(fromGrpcStatus(error!).code).toBe('INVALID_ARGUMENT');
    expect(error?.details).toContain(`Offset ${(bytes.length + 1).toLocaleString('en-US')}`);
    expect(error?.details).toContain(`${bytes.length.toLocaleString('en-US')} bytes`);
  });

  it('fails with DATA_LOSS, not a short stream, when the file no longer has the size the job announced', async () => {
    options.file = { path, fingerprint: FINGERPRINT, size: bytes.length + 1 };
    const { messages, error } = await collect(client.fetchDataset(request()));
    expect(messages).toEqual([]);
    expect(error?.code).toBe(status.DATA_LOSS);
    expect(error?.details).toContain(
      `expected ${(bytes.length + 1).toLocaleString('en-US')} bytes`,
    );
  });

  it('fails with INTERNAL, not NOT_FOUND, when the file is gone', async () => {
    options.file = { path: join(dir, 'missing.slimg'), fingerprint: FINGERPRINT, size: 100 };
    const { error } = await collect(client.fetchDataset(request()));
    expect(error?.code).toBe(status.INTERNAL);
    expect(error?.details).toContain('missing.slimg');
  });

  it('waits for drain: a worker that stops reading holds the server to a few chunks, then gets the rest', async () => {
    options.maxChunkBytes = 16_384;
    const chunks = Math.ceil(bytes.length / options.maxChunkBytes);
    let writes = 0;
    let blocked = 0;
    wrap = (call) =>
      watchWrites(call, (flowing) => {
        writes++;
        if (!flowing) blocked++;
      });
    const call = client.fetchDataset(request());
    const received: FetchDatasetResponse[] = [];
    call.on('data', (m: FetchDatasetResponse) => received.push(m));
    call.pause();
    await waitFor(() => blocked > 0);
    await sleep(100);
    const whilePaused = writes;
    expect(whilePaused).toBeLessThan(chunks / 2);
    await sleep(100);
    expect(writes).toBe(whilePaused); // nothing read or queued while the worker does not read
    call.resume();
    await once(call, 'status');
    expect(checkedData(received, 0).equals(bytes)).toBe(true);
  });

  it('stops and closes the file when the worker cancels', async () => {
    options.maxChunkBytes = 16_384;
    const call = client.fetchDataset(request());
    call.on('error', () => {}); // the CANCELLED status of our own cancel
    call.once('data', () => call.cancel());
    await waitFor(() => handlers.length === 1);
    // Without a 'cancelled' listener it would wait for a 'drain' that never comes.
    expect(await settlesWithin(handlers[0]!, 1000)).toBe(true);
    expect(openDescriptorsOn(dir)).toEqual([]);
  });

  it('fails with DATA_LOSS when the file is truncated while it streams', async () => {
    const copy = join(dir, 'shrinking.slimg');
    await copyFile(path, copy);
    options.file = { path: copy, fingerprint: FINGERPRINT, size: bytes.length };
    options.maxChunkBytes = 16_384;
    let writes = 0;
    let blocked = false;
    wrap = (call) =>
      watchWrites(call, (flowing) => {
        writes++;
        if (!flowing) blocked = true;
      });
    const call = client.fetchDataset(request());
    const received: FetchDatasetResponse[] = [];
    call.on('data', (m: FetchDatasetResponse) => received.push(m));
    const ended = new Promise<ServiceError | undefined>((resolve) => {
      call.on('error', resolve);
      call.on('end', () => resolve(undefined));
    });
    call.pause();
    await waitFor(() => blocked);
    // The server has read as far as it wrote and reads on after 'drain': cut the file a little
    // past that, so the next chunk comes up short.
    const cutAt = writes * options.maxChunkBytes + 5_000;
    await truncate(copy, cutAt);
    call.resume();
    const error = await ended;
    expect(error?.code).toBe(status.DATA_LOSS);
    expect(error?.details).toContain('changed while the job runs');
    expect(error?.details).toContain(`found ${cutAt.toLocaleString('en-US')}`);
    const sent = received.reduce((n, m) => n + m.data.length, 0);
    expect(sent).toBeLessThan(bytes.length);
  });
});

/** Calls `seen` with what each `call.write` returned. */
function watchWrites(
  call: ServerWritableStream<FetchDatasetRequest, FetchDatasetResponse>,
  seen: (flowing: boolean) => void,
): void {
  const write = call.write.bind(call) as (message: FetchDatasetResponse) => boolean;
  Object.assign(call, {
    write: (message: FetchDatasetResponse) => {
      const flowing = write(message);
      seen(flowing);
      return flowing;
    },
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Whether `promise` settles within `ms`. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function waitFor(condition: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error('condition not met in time');
    await sleep(5);
  }
}
