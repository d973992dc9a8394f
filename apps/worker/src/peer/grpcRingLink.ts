/**
 * A ring member's {@link RingLink} over gRPC: what it sends goes on one PeerService.Ring client
 * stream to its right neighbour's peer endpoint; what it receives comes from its own peer
 * endpoint, where the left neighbour's stream feeds an {@link InboundRing}.
 *
 * Failures travel in both directions, so that every member's all-reduce settles: `abort`
 * cancels the outgoing stream (the right neighbour's ring fails with `CONNECTION_LOST`) and
 * fails the inbound ring, which ends the left neighbour's stream with that status (its link
 * fails). Each neighbour's all-reduce then aborts its own link, and so on around the ring. Both
 * directions are needed: a member that aborts before its outgoing stream reached the right
 * neighbour cannot cancel it there, and the failure then arrives from the other side.
 */
import { once } from 'node:events';
import type {
  ChannelCredentials,
  ChannelOptions,
  ClientWritableStream,
  ServiceError,
} from '@grpc/grpc-js';
import { isShardlineError, type Logger, ShardlineError, toShardlineError } from '@shardline/core';
import {
  CHANNEL_OPTIONS,
  crc32,
  createTokenInterceptor,
  fromGrpcStatus,
  PeerServiceClient,
  PROTOCOL_VERSION,
  type RingChunk,
  RingPhase,
  type RingRequest,
} from '@shardline/protocol';
import type { RingLink, RingMessage } from '@shardline/training';
import type { InboundRing, PeerServer } from './peerServer.js';
import { explainPeerTlsFailure } from './peerTls.js';
import { wireDtypeOf } from './ringDtype.js';

/** Where the right neighbour's peer endpoint is and how to reach it. */
export interface RingNeighbour {
  /** Its peer endpoint, `host:port` (what it advertises). */
  address: string;
  /** TLS or insecure, as the worker's channel security decides. */
  credentials: ChannelCredentials;
  /** The job's token, sent on the stream when set. */
  token?: string;
  /** Extra channel options, spread after CHANNEL_OPTIONS (a TLS server name override). */
  channelOptions?: ChannelOptions;
}

/** Options of {@link createGrpcRingLink}. */
export interface GrpcRingLinkOptions {
  /** This worker's peer endpoint, where the left neighbour's stream arrives. */
  server: PeerServer;
  /** The ring formation's id, the same on every member; never reused. */
  ringId: string;
  /** JobSpec.job_id. */
  jobId: string;
  /** This member's rank in the formation. */
  rank: number;
  /** The formation's member count. */
  worldSize: number;
  /** This worker's id from JoinResponse, for the neighbours' logs and messages. */
  workerId?: string;
  /** The member at rank + 1 mod worldSize. */
  right: RingNeighbour;
  logger: Logger;
}

/** A {@link RingLink} over gRPC, with an orderly way out. */
export interface GrpcRingLink extends RingLink {
  /**
   * Leaves the ring in good order once the last all-reduce on it is done: half-closes the
   * outgoing stream (after what is queued), waits for the right neighbour's answer (at most
   * 5 s, then the stream is cancelled), and closes the inbound ring. Later sends and
   * receives reject. Never rejects.
   */
  close(): Promise<void>;
}

/**
 * Joins ring `ringId` as `rank`: registers the inbound side on `server` at once (so the left
 * neighbour's hello finds it), and opens the stream to `right` on the first `send`, beginning
 * with a hello that names the ring, the job, this rank and the world size.
 *
 * @example
 * ```ts
 * const link = createGrpcRingLink({
 *   server, ringId, jobId: job.jobId, rank, worldSize, workerId,
 *   right: { address: members[(rank + 1) % worldSize].peerAddress, credentials, token },
 *   logger,
 * });
 * const { gradient, checksum } = await ringAllReduce({ rank, worldSize, link, ... });
 * await link.close();
 * ```
 */
export function createGrpcRingLink(options: GrpcRingLinkOptions): GrpcRingLink {
  const { rank, worldSize } = options;
  if (
    !Number.isSafeInteger(worldSize) ||
    worldSize < 1 ||
    !Number.isSafeInteger(rank) ||
    rank < 0 ||
    rank >= worldSize
  ) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `A ring link needs a rank from 0 to worldSize - 1 and a worldSize of at least 1; found rank ${rank}, worldSize ${worldSize}.`,
    );
  }
  const inbound = options.server.inbound(options.ringId, {
    senderRank: (rank - 1 + worldSize) % worldSize,
    worldSize,
    jobId: options.jobId,
  });
  return new Link(options, inbound);
}

/** How long close() waits for the right neighbour to answer the half-closed stream. */
const CLOSE_WAIT_MS = 5_000;

class Link implements GrpcRingLink {
  private client: PeerServiceClient | undefined;
  private call: ClientWritableStream<RingRequest> | undefined;
  /** Aborted with the reason sends fail from now on. */
  private readonly dead = new AbortController();
  private aborted = false;
  private closing = false;
  /** Resolves when the outgoing call has ended, however it ended. */
  private ended: Promise<void> = Promise.resolve();
  private readonly right: number;

  constructor(
    private readonly options: GrpcRingLinkOptions,
    private readonly inbound: InboundRing,
  ) {
    this.right = (options.rank + 1) % options.worldSize;
  }

  async send(message: RingMessage, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) throw signal.reason;
    if (this.dead.signal.aborted) throw this.dead.signal.reason;
    const call = this.open();
    if (call.write({ kind: { $case: 'chunk', value: ringChunkOf(message) } })) return;
    // Backpressure: gRPC's buffer is full, so wait for it to drain, for the stream to die
    // (no 'drain' ever comes then), or for the caller to give up.
    const stop = signal ? AbortSignal.any([signal, this.dead.signal]) : this.dead.signal;
    try {
      await once(call, 'drain', { signal: stop });
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (this.dead.signal.aborted) throw this.dead.signal.reason;
      throw toShardlineError(error);
    }
  }

  next(signal?: AbortSignal): Promise<RingMessage> {
    return this.inbound.next(signal);
  }

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    const { rank, ringId, workerId } = this.options;
    // A failure that came around the ring already says where the ring broke and why: pass it
    // on as it is, rather than wrapping it once more at every member.
    const error = isRingFailure(reason, ringId)
      ? reason
      : new ShardlineError(
          'CONNECTION_LOST',
          `Ring ${ringId}: member rank ${rank}${workerId ? ` (worker ${JSON.stringify(workerId)})` : ''} stopped and closed its links (${reason instanceof Error ? reason.message : String(reason)}). The ring must be re-formed before the step can be retried.`,
          { cause: reason, details: { ringId, rank } },
        );
    this.die(error);
    // Cancelling tells the right neighbour at once (RST_STREAM) when the stream reached it.
    this.call?.cancel();
    this.client?.close();
    // Ends the left neighbour's stream with this status, so its link fails too. Together the
    // two directions reach every member, even one whose stream from this member never
    // connected (the failure then comes around the other way).
    this.inbound.fail(error);
  }

  async close(): Promise<void> {
    if (this.closing || this.aborted) return;
    this.closing = true;
    this.die(
      new ShardlineError(
        'CONNECTION_LOST',
        `Ring ${this.options.ringId}: this member (rank ${this.options.rank}) closed its link; sends on it fail.`,
      ),
    );
    this.call?.end();
    // A right neighbour that never answers must not hold this member up: cut the stream off.
    const timer = setTimeout(() => this.call?.cancel(), CLOSE_WAIT_MS);
    await this.ended;
    clearTimeout(timer);
    this.client?.close();
    this.inbound.close();
  }

  private die(error: ShardlineError): void {
    if (!this.dead.signal.aborted) this.dead.abort(error);
  }

  /** The outgoing stream, opened with its hello on first use. */
  private open(): ClientWritableStream<RingRequest> {
    if (this.call) return this.call;
    const { right, ringId, jobId, rank, worldSize, workerId, logger } = this.options;
    const client = new PeerServiceClient(right.address, right.credentials, {
      ...CHANNEL_OPTIONS,
      ...right.channelOptions,
      ...(right.token === undefined ? {} : { interceptors: [createTokenInterceptor(right.token)] }),
    });
    let settle: () => void = () => {};
    this.ended = new Promise<void>((resolve) => {
      settle = resolve;
    });
    const call = client.ring((error, response) => {
      settle();
      if (error) this.onFailed(error);
      else if (!this.closing) {
        // The right neighbour left the ring in good order while this member still sends.
        this.die(
          new ShardlineError(
            'CONNECTION_LOST',
            `Ring ${ringId}: rank ${this.right} (${right.address}) closed the stream from rank ${rank} after ${response?.chunksReceived ?? 0n} chunks; it takes no more. The ring must be re-formed before the step can be retried.`,
            { details: { ringId, peer: this.right } },
          ),
        );
      }
    });
    // Failures arrive through the callback; without a listener an 'error' event would throw.
    call.on('error', () => {});
    this.client = client;
    this.call = call;
    call.write({
      kind: {
        $case: 'hello',
        value: {
          protocolVersion: PROTOCOL_VERSION,
          jobId,
          ringId,
          senderRank: rank,
          worldSize,
          senderWorkerId: workerId ?? '',
        },
      },
    });
    logger.debug('ring stream opened', { ring_id: ringId, rank, right: right.address });
    return call;
  }

  /**
   * The right neighbour refused or ended the stream with an error, or the connection broke: the
   * ring cannot go on, so this member's whole link fails (not only its sends), and with it the
   * stream from the left neighbour. A member whose all-reduce only waits to receive then
   * settles at once instead of waiting for the failure to come around the ring.
   */
  private onFailed(error: ServiceError): void {
    // Our own cancel (abort, or close() giving up) ends the call with CANCELLED.
    if (this.aborted || this.closing) return;
    const { ringId, rank, right, logger } = this.options;
    // A failed handshake reads like a broken connection (UNAVAILABLE); say which neighbour
    // and what to change instead, once per link, where the operator looks (the warn level).
    const handshake = explainPeerTlsFailure(error, {
      address: right.address,
      rank: this.right,
      tls: right.credentials._isSecure(),
    });
    if (handshake) {
      logger.warn('ring peer TLS handshake failed', {
        ring_id: ringId,
        rank,
        right: right.address,
        reason: handshake.message,
      });
      this.abort(handshake);
      return;
    }
    const received = fromGrpcStatus(error, { stream: { cancelledHere: false } });
    const details = { ...received.details, ringId, peer: this.right };
    const failure =
      received.code === 'CONNECTION_LOST'
        ? new ShardlineError(received.code, received.message, { cause: received, details })
        : new ShardlineError(
            received.code,
            `Ring ${ringId}: the stream from rank ${rank} to rank ${this.right} (${right.address}) failed: ${received.message}`,
            { cause: received, details },
          );
    logger.debug('ring stream failed', {
      ring_id: ringId,
      rank,
      code: failure.code,
      reason: received.message,
    });
    this.abort(failure);
  }
}

/** A CONNECTION_LOST of this ring: a failure that is travelling around it. */
function isRingFailure(reason: unknown, ringId: string): reason is ShardlineError {
  return (
    isShardlineError(reason) &&
    reason.code === 'CONNECTION_LOST' &&
    reason.details.ringId === ringId
  );
}

/**
 * A RingMessage as the wire's RingChunk, CRC-32 included; the bytes are shared, not copied.
 * The peer server's `toRingMessage` is the way back.
 */
export function ringChunkOf(m: RingMessage): RingChunk {
  const data = Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength);
  return {
    step: BigInt(m.step),
    phase: m.phase === 'reduce-scatter' ? RingPhase.REDUCE_SCATTER : RingPhase.ALL_GATHER,
    round: m.round,
    segment: m.segment,
    chunk: m.chunk,
    offset: BigInt(m.offset),
    count: m.count,
    samples: BigInt(m.samples),
    dtype: wireDtypeOf(m.dtype),
    data,
    crc32: crc32(data),
  };
}
