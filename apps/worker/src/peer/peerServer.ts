/**
 * The worker's peer endpoint for ring mode: a gRPC server offering PeerService.Ring, on which
 * each ring member's left neighbour streams the all-reduce's messages to it.
 *
 * One Ring stream per ring formation and direction: the stream is bound to a ring by its hello
 * and then carries every chunk of that link, in order, for as many steps as the formation
 * lasts. The receiving side of a ring is an {@link InboundRing}, registered by the member that
 * takes part (usually through createGrpcRingLink) before or shortly after the left neighbour's
 * hello arrives; the stream's chunks are checked (size, CRC-32, field ranges), converted into
 * @shardline/training RingMessages and queued for the all-reduce's `next()`.
 *
 * Who may disturb a ring: a call without the job's token, a hello that does not match what the
 * ring expects (job, ring id, sender rank, world size, protocol version) and a second stream for
 * a ring that already has one are refused before they touch it, so a rogue or confused peer
 * cannot break a working ring. Once a stream is bound, the ring depends on it: a chunk that
 * fails a check, or a stream that breaks off, fails the ring (the member's all-reduce rejects,
 * naming the sender), because a lost message cannot be made up for.
 *
 * Backpressure: a bound stream is paused while the ring's queue holds `inboundCapacity` chunks
 * that the all-reduce has not taken, so a fast sender waits on HTTP/2 flow control instead of
 * filling this process's memory.
 */
import {
  Server,
  type ServerCredentials,
  type ServerReadableStream,
  type sendUnaryData,
  status,
} from '@grpc/grpc-js';
import { formatCount, type Logger, ShardlineError, toShardlineError } from '@shardline/core';
import {
  applyServerFlowControlWindow,
  crc32,
  type DataType,
  dataTypeToJSON,
  maxMessageBytesFor,
  PeerServiceService,
  protocolVersionError,
  type RingChunk,
  type RingHello,
  RingPhase,
  type RingRequest,
  type RingResponse,
  requireToken,
  SERVER_OPTIONS,
  TOKEN_ENV,
  type TokenRefusal,
  toGrpcStatus,
} from '@shardline/protocol';
import type { RingMessage } from '@shardline/training';
import { ringDtypeOf } from './ringDtype.js';

/** Options of {@link startPeerServer}. */
export interface PeerServerOptions {
  /** `host:port` to listen on; port 0 picks a free port (see {@link PeerServer.port}). */
  listen: string;
  /** TLS or insecure, as the worker's channel security decides. */
  credentials: ServerCredentials;
  /** The job's token: when set, every call must carry it (UNAUTHENTICATED otherwise). */
  token?: string;
  /**
   * Largest chunk payload (RingChunk.data bytes) accepted: the ring's maxChunkBytes. A larger
   * chunk is refused with RESOURCE_EXHAUSTED and fails its ring. gRPC's own message limit is
   * this plus MESSAGE_HEADROOM_BYTES, so a chunk a little too large reaches the check (and its
   * refusal names the sizes), while a far larger one is cut off by gRPC before it is buffered.
   */
  maxMessageBytes: number;
  logger: Logger;
  /**
   * How long a hello naming a ring nobody has registered yet waits for {@link
   * PeerServer.inbound} (default 10 s): the left neighbour may learn of a new formation and
   * connect a moment before this worker registers it. Then NOT_FOUND. A stream that sends no
   * hello for this long is refused too (INVALID_ARGUMENT).
   */
  helloWaitMs?: number;
  /** Chunks a ring queues before its stream is paused (default 4). */
  inboundCapacity?: number;
}

/** What a ring expects of the stream that feeds it. */
export interface InboundExpectation {
  /** The left neighbour's rank: (own rank - 1) mod worldSize. */
  senderRank: number;
  /** The formation's member count. */
  worldSize: number;
  /** JobSpec.job_id of the job. */
  jobId: string;
}

/** The receiving side of one ring formation on this worker: what the left neighbour sends. */
export interface InboundRing {
  /** The formation's id, as the hello names it. */
  readonly ringId: string;
  /**
   * The next message from the left neighbour, in the order sent. Rejects with `signal.reason`
   * when the signal aborts (the message stays queued), and with the ring's failure once it
   * failed: the refusal of a bad chunk (naming the sender), or `CONNECTION_LOST` when the
   * stream broke off or ended.
   */
  next(signal?: AbortSignal): Promise<RingMessage>;
  /**
   * Fails the ring: pending and later `next` calls reject with `reason` (a ShardlineError, or
   * anything toShardlineError accepts), queued messages are dropped, and a bound stream is
   * ended with `reason` as its gRPC status, so the left neighbour's sends fail too. A hello
   * for the ring arriving later is refused with the same status. Idempotent.
   */
  fail(reason: unknown): void;
  /**
   * Leaves the ring in good order: a bound stream is answered with OK (the sender's later
   * sends then fail), later `next` calls reject with `CONNECTION_LOST`. Idempotent.
   */
  close(): void;
}

/** A running peer endpoint. */
export interface PeerServer {
  /** `host:port` it listens on, with the port it got. */
  readonly address: string;
  /** The port it got (the one asked for, unless that was 0). */
  readonly port: number;
  /**
   * Registers the receiving side of ring `ringId`, whose stream must come from
   * `expected.senderRank` of a ring of `expected.worldSize` members in job `expected.jobId`.
   * Throws INVALID_ARGUMENT for a ring id this server already knows (ring ids are never
   * reused: a re-formed ring gets a new one) or after {@link PeerServer.close}.
   */
  inbound(ringId: string, expected: InboundExpectation): InboundRing;
  /**
   * Fails every ring (`CONNECTION_LOST`: the worker is shutting down), answers every open
   * stream, and shuts the server down; resolves once it stopped. Idempotent.
   */
  close(): Promise<void>;
}

const DEFAULT_HELLO_WAIT_MS = 10_000;
const DEFAULT_INBOUND_CAPACITY = 4;
/** Ring ids and worker ids longer than this are refused, before they reach a log line. */
const MAX_ID_LENGTH = 256;
/** Rings that ended are remembered (up to this many) so that a late hello is refused at once. */
const RETIRED_RINGS_KEPT = 256;
/** How long close() waits for open calls to finish before cutting them off. */
const SHUTDOWN_GRACE_MS = 2_000;

// Worded for the worker whose call was refused. Never includes either token.
const PEER_TOKEN_REFUSALS: Readonly<Record<TokenRefusal, string>> = {
  'no token':
    `This worker's peer endpoint requires the job's token on every call, and this call carried none. Give every worker of the job the coordinator's token with --token or ${TOKEN_ENV} ` +
    '(it is sent as "authorization: Bearer <token>").',
  'wrong token': `The token this call carried does not match the one this worker's peer endpoint requires. Give every worker of the job the coordinator's token with --token or ${TOKEN_ENV}.`,
};

/**
 * Starts a worker's peer endpoint on `options.listen`.
 *
 * @example
 * ```ts
 * const server = await startPeerServer({
 *   listen: '0.0.0.0:0', credentials: ServerCredentials.createInsecure(), token,
 *   maxMessageBytes: job.maxChunkBytes, logger,
 * });
 * logger.info('peer endpoint', { address: server.address });
 * ```
 */
export async function startPeerServer(options: PeerServerOptions): Promise<PeerServer> {
  checkOptions(options);
  const registry = new RingRegistry(options);
  const server = new Server({
    ...SERVER_OPTIONS,
    'grpc.max_receive_message_length': maxMessageBytesFor(options.maxMessageBytes),
  });
  const implementation = {
    ring: (
      call: ServerReadableStream<RingRequest, RingResponse>,
      callback: sendUnaryData<RingResponse>,
    ) => new RingStream(call, callback, registry, options).start(),
  };
  server.addService(
    PeerServiceService,
    options.token === undefined
      ? implementation
      : requireToken(PeerServiceService, implementation, {
          token: options.token,
          logger: options.logger,
          messages: PEER_TOKEN_REFUSALS,
        }),
  );
  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(options.listen, options.credentials, (error, p) =>
        error ? reject(error) : resolve(p),
      ),
    );
  } catch (error) {
    server.forceShutdown();
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Cannot serve the peer endpoint on ${options.listen}: ${(error as Error).message}. Choose another --peer-listen address or port.`,
      { cause: error },
    );
  }
  applyServerFlowControlWindow(server);
  const host = options.listen.slice(0, options.listen.lastIndexOf(':'));
  const address = `${host}:${port}`;
  options.logger.debug('peer endpoint listening', { address });
  let closing: Promise<void> | undefined;
  return {
    address,
    port,
    inbound: (ringId, expected) => registry.register(ringId, expected),
    close() {
      closing ??= registry.closeAll().then(() => shutdown(server));
      return closing;
    },
  };
}

function checkOptions(options: PeerServerOptions): void {
  const { maxMessageBytes, helloWaitMs, inboundCapacity } = options;
  if (!Number.isSafeInteger(maxMessageBytes) || maxMessageBytes < 4) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The peer endpoint's maxMessageBytes must be a whole number of bytes, at least 4 (one float32); found ${maxMessageBytes}. Use the job's max_chunk_bytes.`,
    );
  }
  if (helloWaitMs !== undefined && !(helloWaitMs >= 0)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `helloWaitMs must be 0 or more milliseconds; found ${helloWaitMs}.`,
    );
  }
  if (
    inboundCapacity !== undefined &&
    (!Number.isSafeInteger(inboundCapacity) || inboundCapacity < 1)
  ) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `inboundCapacity must be a whole number of chunks, at least 1; found ${inboundCapacity}.`,
    );
  }
}

/** Lets open calls finish for a moment (their statuses are on the way), then cuts them off. */
async function shutdown(server: Server): Promise<void> {
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, SHUTDOWN_GRACE_MS);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** The side of a bound stream that a ring drives. */
interface BoundStream {
  /** Who sends, for messages: "rank 2 (worker w-2, 127.0.0.1:50123)". */
  readonly sender: string;
  /** Ends the call: OK without an error, else the error as its status. Idempotent. */
  answer(error?: ShardlineError): void;
  pause(): void;
  resume(): void;
}

interface Receiver {
  resolve(message: RingMessage): void;
  reject(reason: unknown): void;
}

/** An {@link InboundRing}: a queue fed by at most one stream. */
class Inbound implements InboundRing {
  private readonly queue: RingMessage[] = [];
  private readonly receivers: Receiver[] = [];
  private stream: BoundStream | undefined;
  private paused = false;
  /** Set once the ring cannot deliver anything more (after what is queued, for an end). */
  private ended: { error: ShardlineError; drop: boolean } | undefined;

  constructor(
    readonly ringId: string,
    readonly expected: InboundExpectation,
    private readonly capacity: number,
    private readonly retire: (ring: Inbound, error: ShardlineError) => void,
  ) {}

  /** The stream bound to it, if any. */
  get bound(): BoundStream | undefined {
    return this.stream;
  }

  bind(stream: BoundStream): void {
    this.stream = stream;
  }

  push(message: RingMessage): void {
    if (this.ended) return;
    const receiver = this.receivers.shift();
    if (receiver) {
      receiver.resolve(message);
      return;
    }
    this.queue.push(message);
    if (this.queue.length >= this.capacity && !this.paused) {
      this.paused = true;
      this.stream?.pause();
    }
  }

  next(signal?: AbortSignal): Promise<RingMessage> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const message = this.queue.shift();
    if (message) {
      if (this.paused && this.queue.length < this.capacity) {
        this.paused = false;
        this.stream?.resume();
      }
      return Promise.resolve(message);
    }
    if (this.ended) return Promise.reject(this.ended.error);
    return new Promise<RingMessage>((resolve, reject) => {
      const onAbort = () => {
        const i = this.receivers.indexOf(receiver);
        if (i >= 0) this.receivers.splice(i, 1);
        reject(signal!.reason);
      };
      const receiver: Receiver = {
        resolve: (m) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(m);
        },
        reject: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      this.receivers.push(receiver);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** The sender half-closed its stream: what is queued is still delivered, then `error`. */
  senderEnded(error: ShardlineError): void {
    this.finish(error, false);
  }

  fail(reason: unknown): void {
    const error = toShardlineError(reason);
    const stream = this.stream;
    if (this.finish(error, true)) stream?.answer(error);
  }

  close(): void {
    const stream = this.stream;
    const error = new ShardlineError(
      'CONNECTION_LOST',
      `Ring ${this.ringId} was closed on this worker: it takes no more messages. Re-form the ring to go on.`,
      { details: { ringId: this.ringId } },
    );
    if (this.finish(error, true)) stream?.answer();
  }

  /** Ends the ring once; returns false when it had already ended. */
  private finish(error: ShardlineError, drop: boolean): boolean {
    if (this.ended) {
      // A sender that ended in good order, then a failure: drop what is left all the same.
      if (drop && !this.ended.drop) {
        this.ended = { error, drop };
        this.queue.length = 0;
      }
      return false;
    }
    this.ended = { error, drop };
    if (drop) this.queue.length = 0;
    if (this.queue.length === 0) for (const r of this.receivers.splice(0)) r.reject(error);
    this.stream = undefined;
    this.retire(this, error);
    return true;
  }
}

/** The rings of one peer server: registered, awaited by early hellos, and recently ended. */
class RingRegistry {
  private readonly active = new Map<string, Inbound>();
  private readonly retired = new Map<string, ShardlineError>();
  private readonly waiting = new Map<string, Set<(ring: Inbound | undefined) => void>>();
  private closed = false;
  private readonly capacity: number;

  constructor(private readonly options: PeerServerOptions) {
    this.capacity = options.inboundCapacity ?? DEFAULT_INBOUND_CAPACITY;
  }

  register(ringId: string, expected: InboundExpectation): InboundRing {
    checkExpectation(ringId, expected);
    if (this.closed) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Cannot register ring ${ringId}: this peer endpoint is closed.`,
      );
    }
    if (this.active.has(ringId) || this.retired.has(ringId)) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Ring ${ringId} is already registered on this peer endpoint. Every ring formation needs a fresh ring id.`,
        { details: { ringId } },
      );
    }
    const ring = new Inbound(ringId, { ...expected }, this.capacity, (r, error) =>
      this.retire(r, error),
    );
    this.active.set(ringId, ring);
    const waiters = this.waiting.get(ringId);
    this.waiting.delete(ringId);
    for (const wake of waiters ?? []) wake(ring);
    return ring;
  }

  /**
   * The ring a hello names: registered, or registered within the wait, or undefined. A ring
   * that already ended is returned as its failure, so the hello is refused with it.
   */
  async find(
    ringId: string,
    cancelled: AbortSignal,
  ): Promise<Inbound | ShardlineError | undefined> {
    const known = this.active.get(ringId) ?? this.retired.get(ringId);
    if (known || this.closed) return known;
    const wait = this.options.helloWaitMs ?? DEFAULT_HELLO_WAIT_MS;
    return await new Promise<Inbound | undefined>((resolve) => {
      const set = this.waiting.get(ringId) ?? new Set();
      this.waiting.set(ringId, set);
      const done = (ring: Inbound | undefined) => {
        clearTimeout(timer);
        cancelled.removeEventListener('abort', onCancel);
        set.delete(done);
        if (set.size === 0 && this.waiting.get(ringId) === set) this.waiting.delete(ringId);
        resolve(ring);
      };
      const onCancel = () => done(undefined);
      const timer = setTimeout(() => done(undefined), wait);
      cancelled.addEventListener('abort', onCancel, { once: true });
      set.add(done);
    });
  }

  private retire(ring: Inbound, error: ShardlineError): void {
    if (this.active.get(ring.ringId) === ring) this.active.delete(ring.ringId);
    this.retired.set(ring.ringId, error);
    if (this.retired.size > RETIRED_RINGS_KEPT) {
      const oldest = this.retired.keys().next().value as string;
      this.retired.delete(oldest);
    }
  }

  /** Fails every ring and wakes every waiting hello (which is then refused). */
  async closeAll(): Promise<void> {
    this.closed = true;
    const error = new ShardlineError(
      'CONNECTION_LOST',
      "This worker's peer endpoint is shutting down: the worker is leaving the job or stopping. Re-form the ring without it.",
    );
    for (const ring of [...this.active.values()]) ring.fail(error);
    for (const waiters of [...this.waiting.values()])
      for (const wake of [...waiters]) wake(undefined);
    this.waiting.clear();
  }

  get isClosed(): boolean {
    return this.closed;
  }
}

function checkExpectation(ringId: string, e: InboundExpectation): void {
  const ok =
    typeof ringId === 'string' &&
    ringId.length > 0 &&
    ringId.length <= MAX_ID_LENGTH &&
    Number.isSafeInteger(e.worldSize) &&
    e.worldSize >= 1 &&
    Number.isSafeInteger(e.senderRank) &&
    e.senderRank >= 0 &&
    e.senderRank < e.worldSize &&
    typeof e.jobId === 'string';
  if (!ok) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Cannot register ring ${JSON.stringify(String(ringId).slice(0, 64))}: expected a ring id of 1 to ${MAX_ID_LENGTH} characters, a world size of at least 1 and a sender rank from 0 to world size - 1; found world size ${e.worldSize}, sender rank ${e.senderRank}.`,
    );
  }
}

/** One Ring call, from its hello to its end. */
class RingStream implements BoundStream {
  private readonly peer: string;
  /** Aborted when the call is over, however it ended: stops waiting for its ring or hello. */
  private readonly cancelled = new AbortController();
  private settled = false;
  private hello: RingHello | undefined;
  private ring: Inbound | undefined;
  private chunks = 0;
  sender: string;

  constructor(
    private readonly call: ServerReadableStream<RingRequest, RingResponse>,
    private readonly callback: sendUnaryData<RingResponse>,
    private readonly registry: RingRegistry,
    private readonly options: PeerServerOptions,
  ) {
    this.peer = call.getPeer();
    this.sender = `a peer at ${this.peer}`;
  }

  start(): void {
    // A stream that never says which ring it is for would hold a call open for nothing.
    const wait = this.options.helloWaitMs ?? DEFAULT_HELLO_WAIT_MS;
    const timer = setTimeout(() => {
      if (!this.hello) {
        this.refuse(
          malformed(`${this.sender} sent no hello within ${wait} ms of opening the stream.`),
        );
      }
    }, wait);
    this.cancelled.signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
    this.call.on('data', (request: RingRequest) => this.onRequest(request));
    this.call.on('end', () => this.onEnd());
    this.call.on('cancelled', () => this.onBroken('cancelled'));
    // A Readable without an 'error' listener would throw; grpc-js reports through 'cancelled'.
    this.call.on('error', () => this.onBroken('error'));
  }

  answer(error?: ShardlineError): void {
    if (this.settled) return;
    this.settled = true;
    this.call.pause();
    this.cancelled.abort();
    if (error) this.callback(statusFor(error));
    else this.callback(null, { chunksReceived: BigInt(this.chunks) });
  }

  pause(): void {
    this.call.pause();
  }

  resume(): void {
    if (!this.settled) this.call.resume();
  }

  private onRequest(request: RingRequest): void {
    if (this.settled) return;
    const kind = request.kind;
    switch (kind?.$case) {
      case 'hello':
        this.onHello(kind.value);
        return;
      case 'chunk':
        this.onChunk(kind.value);
        return;
      default:
        this.refuse(
          malformed(
            `a RingRequest with no kind from ${this.sender}; every message must be a hello or a chunk.`,
          ),
        );
    }
  }

  private onHello(hello: RingHello): void {
    if (this.hello) {
      this.refuse(malformed(`a second hello from ${this.sender}; a Ring stream has one, first.`));
      return;
    }
    this.hello = hello;
    // Nothing more is read until the hello is accepted: chunks wait in gRPC's flow control.
    this.call.pause();
    this.bindTo(hello).catch((error: unknown) => this.refuse(toShardlineError(error)));
  }

  private async bindTo(hello: RingHello): Promise<void> {
    checkHelloFields(hello, this.peer);
    const ringId = hello.ringId;
    this.sender = `rank ${hello.senderRank} (worker ${JSON.stringify(hello.senderWorkerId)}, ${this.peer})`;
    const found = await this.registry.find(ringId, this.cancelled.signal);
    if (this.settled || this.cancelled.signal.aborted) return;
    if (found instanceof ShardlineError) {
      throw new ShardlineError(
        found.code,
        `Ring ${ringId} has ended on this worker, so the stream from ${this.sender} is refused: ${found.message}`,
        { cause: found, details: { ringId } },
      );
    }
    if (!found) {
      throw new ShardlineError(
        'NOT_FOUND',
        this.registry.isClosed
          ? `This worker's peer endpoint is shutting down; the stream from ${this.sender} for ring ${ringId} is refused.`
          : `This worker is not a member of ring ${ringId} (it registered no such ring within ${this.options.helloWaitMs ?? DEFAULT_HELLO_WAIT_MS} ms of the hello from ${this.sender}). Is the sender working from an older ring formation? Wait for the coordinator's next formation.`,
        { details: { ringId } },
      );
    }
    checkHelloAgainst(hello, found, this.sender);
    const other = found.bound;
    if (other) {
      throw new ShardlineError(
        'MISMATCH',
        `Ring ${ringId} already receives from ${other.sender}; a second stream from ${this.sender} is refused. Each ring link carries one stream.`,
        { details: { ringId } },
      );
    }
    this.ring = found;
    found.bind(this);
    this.options.logger.debug('ring stream bound', {
      ring_id: ringId,
      sender_rank: hello.senderRank,
      sender_worker_id: hello.senderWorkerId,
      peer: this.peer,
    });
    this.call.resume();
  }

  private onChunk(chunk: RingChunk): void {
    const ring = this.ring;
    if (!this.hello || !ring) {
      this.refuse(
        malformed(
          `a chunk from ${this.sender} before its hello was accepted; send a RingHello first.`,
        ),
      );
      return;
    }
    let message: RingMessage;
    try {
      message = toRingMessage(chunk, this.hello.senderRank, this.options.maxMessageBytes, () =>
        this.where(chunk),
      );
    } catch (error) {
      this.refuse(toShardlineError(error));
      return;
    }
    this.chunks += 1;
    ring.push(message);
  }

  private where(chunk: RingChunk): string {
    return `Ring ${this.ring?.ringId ?? '?'}: chunk ${formatCount(this.chunks)} of the stream from ${this.sender} (step ${chunk.step}, segment ${chunk.segment}, chunk ${chunk.chunk})`;
  }

  private onEnd(): void {
    if (this.settled) return;
    if (!this.ring) {
      this.refuse(malformed(`the stream from ${this.sender} ended before its hello was accepted.`));
      return;
    }
    const ring = this.ring;
    this.answer();
    ring.senderEnded(
      new ShardlineError(
        'CONNECTION_LOST',
        `Ring ${ring.ringId}: ${this.sender} closed its stream after ${formatCount(this.chunks)} chunks, and no more will come. The ring must be re-formed before the step can be retried.`,
        { details: { ringId: ring.ringId, peer: ring.expected.senderRank } },
      ),
    );
  }

  private onBroken(how: 'cancelled' | 'error'): void {
    this.cancelled.abort();
    if (this.settled) return;
    this.settled = true;
    const ring = this.ring;
    if (!ring) return;
    ring.fail(
      new ShardlineError(
        'CONNECTION_LOST',
        `Ring ${ring.ringId}: the stream from ${this.sender} broke off after ${formatCount(this.chunks)} chunks (${how}): that member stopped, its connection broke, or gRPC refused a message over ${formatCount(maxMessageBytesFor(this.options.maxMessageBytes))} bytes. The ring must be re-formed before the step can be retried.`,
        { details: { ringId: ring.ringId, peer: ring.expected.senderRank } },
      ),
    );
  }

  /** Ends the call with `error`; a bound ring fails with it too (it has lost a message). */
  private refuse(error: ShardlineError): void {
    if (this.settled) return;
    // A hello for a ring that just failed is part of tearing it down; anything else is a peer
    // that is confused or hostile, worth an operator's look.
    const level = error.code === 'CONNECTION_LOST' ? 'debug' : 'warn';
    this.options.logger[level]('refused a ring stream', {
      ring_id: this.hello?.ringId,
      peer: this.peer,
      code: error.code,
      reason: error.message,
    });
    this.answer(error);
    this.ring?.fail(error);
  }
}

/** toGrpcStatus's status, with the exact gRPC code where the error names one (`grpcCode`). */
function statusFor(error: ShardlineError): ReturnType<typeof toGrpcStatus> {
  const grpcStatus = toGrpcStatus(error);
  const { grpcCode } = error.details;
  if (typeof grpcCode === 'number') grpcStatus.code = grpcCode as status;
  return grpcStatus;
}

function malformed(what: string): ShardlineError {
  return new ShardlineError('INVALID_ARGUMENT', `Malformed Ring stream: ${what}`);
}

/** What a hello must hold whatever ring it names. */
function checkHelloFields(hello: RingHello, peer: string): void {
  const refusal = protocolVersionError(hello.protocolVersion, {
    role: 'worker',
    name: `${JSON.stringify(hello.senderWorkerId.slice(0, 64))} (${peer})`,
  });
  if (refusal) throw refusal;
  for (const [field, value] of [
    ['ring_id', hello.ringId],
    ['sender_worker_id', hello.senderWorkerId],
  ] as const) {
    if (value.length > MAX_ID_LENGTH || (field === 'ring_id' && value.length === 0)) {
      throw malformed(
        `the hello from ${peer} has a ${field} of ${formatCount(value.length)} characters; expected 1 to ${MAX_ID_LENGTH}.`,
      );
    }
  }
}

/** The hello must describe the link the ring expects: same job, world size and sender. */
function checkHelloAgainst(hello: RingHello, ring: Inbound, sender: string): void {
  const e = ring.expected;
  const found: string[] = [];
  if (hello.jobId !== e.jobId)
    found.push(
      `job ${JSON.stringify(hello.jobId.slice(0, 64))} instead of ${JSON.stringify(e.jobId)}`,
    );
  if (hello.worldSize !== e.worldSize)
    found.push(`world size ${hello.worldSize} instead of ${e.worldSize}`);
  if (hello.senderRank !== e.senderRank)
    found.push(
      `sender rank ${hello.senderRank} instead of ${e.senderRank} (this member's left neighbour)`,
    );
  if (found.length === 0) return;
  throw new ShardlineError(
    'MISMATCH',
    `Ring ${ring.ringId}: the hello from ${sender} does not match the ring this worker is in: ${found.join(', ')}. The two workers hold different ring formations; both must follow the coordinator's latest one.`,
    {
      details: {
        ringId: ring.ringId,
        expected: { ...e },
        found: { jobId: hello.jobId, worldSize: hello.worldSize, senderRank: hello.senderRank },
      },
    },
  );
}

/**
 * A RingChunk as the all-reduce's RingMessage, after the checks only the transport can make:
 * size (before anything else touches the bytes), CRC-32, and fields that fit their types. The
 * all-reduce then checks every field against the schedule.
 */
function toRingMessage(
  chunk: RingChunk,
  sender: number,
  maxBytes: number,
  where: () => string,
): RingMessage {
  const bytes = chunk.data.byteLength;
  if (bytes > maxBytes) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${where()} carries ${formatCount(bytes)} bytes, more than the ${formatCount(maxBytes)} this worker accepts in one chunk. Every member must use the job's max_chunk_bytes.`,
      { details: { grpcCode: status.RESOURCE_EXHAUSTED, found: bytes, limit: maxBytes } },
    );
  }
  const actual = crc32(chunk.data);
  if (actual !== chunk.crc32) {
    throw new ShardlineError(
      'DATA_CORRUPT',
      `${where()} fails its checksum: the sender's CRC-32 is ${hex(chunk.crc32)}, the ${formatCount(bytes)} bytes received give ${hex(actual)}. The bytes were damaged between the two workers; nothing of the chunk was used.`,
      { details: { expected: chunk.crc32, found: actual } },
    );
  }
  return {
    step: safe(chunk.step, 'step', where),
    phase: phaseOf(chunk.phase, where),
    round: chunk.round,
    segment: chunk.segment,
    chunk: chunk.chunk,
    offset: safe(chunk.offset, 'offset', where),
    count: chunk.count,
    samples: safe(chunk.samples, 'samples', where),
    sender,
    dtype: dtypeOf(chunk.dtype, where),
    data: chunk.data,
  };
}

function hex(value: number): string {
  return (value >>> 0).toString(16).padStart(8, '0');
}

function safe(value: bigint, field: string, where: () => string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw malformed(`${where()} has ${field} ${value}, beyond 2^53 - 1.`);
  }
  return Number(value);
}

function phaseOf(phase: RingPhase, where: () => string): RingMessage['phase'] {
  switch (phase) {
    case RingPhase.REDUCE_SCATTER:
      return 'reduce-scatter';
    case RingPhase.ALL_GATHER:
      return 'all-gather';
    default:
      throw malformed(`${where()} has phase ${phase}; expected REDUCE_SCATTER or ALL_GATHER.`);
  }
}

function dtypeOf(dtype: DataType, where: () => string): RingMessage['dtype'] {
  const known = ringDtypeOf(dtype);
  if (known !== undefined) return known;
  throw new ShardlineError(
    'MISMATCH',
    `${where()} is encoded as ${dataTypeToJSON(dtype)}; this worker's ring takes DATA_TYPE_FLOAT32, DATA_TYPE_FLOAT16 or DATA_TYPE_BFLOAT16. Run the same Shardline release on every worker.`,
    { details: { found: dtype } },
  );
}
