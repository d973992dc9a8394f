/**
 * An in-memory ring: worldSize links joined by bounded queues, for tests and for rings inside
 * one process. The queues are bounded on purpose: a sender that runs ahead of its neighbour
 * waits, as it would on a real stream with flow control, so tests exercise backpressure.
 */
import { ShardlineError } from '@shardline/core';
import type { RingLink, RingMessage } from './types.js';

/** Options of {@link createMemoryRing}. */
export interface MemoryRingOptions {
  /**
   * Messages each link's queue holds before `send` waits for the receiver (default 2). Small
   * values exercise backpressure; the all-reduce is correct with any capacity of at least 1.
   */
  capacity?: number;
}

interface PendingSend {
  readonly message: RingMessage;
  readonly resolve: () => void;
  readonly reject: (reason: unknown) => void;
}

interface PendingReceive {
  readonly resolve: (message: RingMessage) => void;
  readonly reject: (reason: unknown) => void;
}

/** One direction between two neighbours: rank `from` to rank `from + 1`. */
class Channel {
  private readonly queue: RingMessage[] = [];
  private readonly senders: PendingSend[] = [];
  private readonly receivers: PendingReceive[] = [];
  private closedWith: unknown;
  private closed = false;

  constructor(private readonly capacity: number) {}

  send(message: RingMessage, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.closed) return Promise.reject(this.closedWith);
    const receiver = this.receivers.shift();
    if (receiver) {
      receiver.resolve(message);
      return Promise.resolve();
    }
    if (this.queue.length < this.capacity) {
      this.queue.push(message);
      return Promise.resolve();
    }
    return abortable<void>(signal, (resolve, reject) => {
      const pending: PendingSend = { message, resolve, reject };
      this.senders.push(pending);
      return () => remove(this.senders, pending);
    });
  }

  next(signal?: AbortSignal): Promise<RingMessage> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    // A closed channel drops what it still holds: the ring is being torn down, and a receiver
    // that went on consuming would only wait for the rest of a round that never comes.
    if (this.closed) return Promise.reject(this.closedWith);
    const message = this.queue.shift();
    if (message) {
      const sender = this.senders.shift();
      if (sender) {
        this.queue.push(sender.message);
        sender.resolve();
      }
      return Promise.resolve(message);
    }
    return abortable<RingMessage>(signal, (resolve, reject) => {
      const pending: PendingReceive = { resolve, reject };
      this.receivers.push(pending);
      return () => remove(this.receivers, pending);
    });
  }

  close(reason: unknown): void {
    if (this.closed) return;
    this.closed = true;
    this.closedWith = reason;
    this.queue.length = 0;
    for (const s of this.senders.splice(0)) s.reject(reason);
    for (const r of this.receivers.splice(0)) r.reject(reason);
  }
}

function remove<T>(list: T[], item: T): void {
  const i = list.indexOf(item);
  if (i >= 0) list.splice(i, 1);
}

/**
 * A promise settled by `register`'s callbacks or rejected with `signal.reason` when the signal
 * aborts first; `register` returns a function that withdraws the registration. The abort
 * listener is removed on settle, so thousands of chunks on one signal leave no listeners behind.
 */
function abortable<T>(
  signal: AbortSignal | undefined,
  register: (resolve: (value: T) => void, reject: (reason: unknown) => void) => () => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      withdraw();
      reject(signal!.reason);
    };
    const withdraw = register(
      (value) => {
        signal?.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (reason) => {
        signal?.removeEventListener('abort', onAbort);
        reject(reason);
      },
    );
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * `worldSize` linked {@link RingLink}s, indexed by rank: what rank r sends, rank r + 1 (mod
 * worldSize) receives, through a queue of `capacity` messages. Messages are handed over as they
 * are, without a copy (ring messages own their bytes).
 *
 * `abort(reason)` on rank r's link closes both of its channels: rank r + 1's pending and later
 * `next` and rank r - 1's pending and later `send` reject with a `CONNECTION_LOST`
 * ShardlineError naming rank r, as a broken stream would on a network.
 *
 * @example
 * ```ts
 * const links = createMemoryRing(3);
 * const results = await Promise.all(
 *   links.map((link, rank) =>
 *     ringAllReduce({ rank, worldSize: 3, link, gradient: grads[rank], sampleCount: 32,
 *       step: 0, maxChunkBytes: 1 << 20 }),
 *   ),
 * );
 * ```
 */
export function createMemoryRing(worldSize: number, options: MemoryRingOptions = {}): RingLink[] {
  const capacity = options.capacity ?? 2;
  if (!Number.isSafeInteger(worldSize) || worldSize < 1) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `A ring needs a whole number of members, at least 1; found worldSize ${worldSize}.`,
    );
  }
  if (!Number.isSafeInteger(capacity) || capacity < 1) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `A memory ring's queue capacity must be a whole number of messages, at least 1; found ${capacity}.`,
    );
  }
  // channels[r] carries rank r's messages to rank r + 1.
  const channels = Array.from({ length: worldSize }, () => new Channel(capacity));
  return channels.map((outgoing, rank) => {
    const incoming = channels[(rank - 1 + worldSize) % worldSize]!;
    return {
      send: (message, signal) => outgoing.send(message, signal),
      next: (signal) => incoming.next(signal),
      abort(reason) {
        const detail = reason instanceof Error ? reason.message : String(reason);
        const error = new ShardlineError(
          'CONNECTION_LOST',
          `Ring member rank ${rank} stopped and closed its links (${detail}). ` +
            'The ring must be re-formed before the step can be retried.',
          { cause: reason, details: { rank } },
        );
        outgoing.close(error);
        incoming.close(error);
      },
    } satisfies RingLink;
  });
}
