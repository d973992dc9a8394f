/**
 * The contract between the ring all-reduce and whatever carries its messages: an in-memory
 * queue (createMemoryRing), or a gRPC stream between two workers. The algorithm only ever talks
 * to its two neighbours, in one direction: it sends to the member on its right (rank + 1) and
 * receives from the member on its left (rank - 1), so a link is one outgoing and one incoming
 * ordered stream.
 */

/** The two halves of a ring all-reduce, in the order they run. */
export type RingPhase = 'reduce-scatter' | 'all-gather';

/**
 * How a message's `data` encodes its values, little-endian: `float32` (IEEE 754 single
 * precision, 4 bytes per element), or the job's `--gradient-dtype` compression `float16` /
 * `bfloat16` (2 bytes per element, half the traffic). `count` is in elements, not bytes.
 */
export type RingDtype = 'float32' | 'float16' | 'bfloat16';

/**
 * One chunk of one segment in one round, as it travels from a member to its right neighbour.
 *
 * Every field is checked by the receiver against what it expects next (the schedule is fixed by
 * rank, world size, vector length and chunk size), so a peer that is confused about the step,
 * the round or the cut is refused instead of being added into a replica.
 */
export interface RingMessage {
  /** The training step this all-reduce belongs to; a message from another step is refused. */
  readonly step: number;
  /** Reduce-scatter (partial sums travel) or all-gather (final averaged values travel). */
  readonly phase: RingPhase;
  /** The round within the phase, 0 to worldSize - 2. */
  readonly round: number;
  /** Which of the worldSize segments of the vector this chunk belongs to. */
  readonly segment: number;
  /** The chunk's index within its segment, from 0. */
  readonly chunk: number;
  /** Offset of the chunk's first element in the whole vector (elements, not bytes). */
  readonly offset: number;
  /** Number of elements in the chunk; `data` holds `count` times the dtype's width bytes. */
  readonly count: number;
  /**
   * Samples behind the values. In reduce-scatter: the sum of the sample counts of the members
   * added into this partial sum so far. In all-gather: the total over all members (the divisor
   * the owner used), which every receiver checks against the total it computed itself.
   */
  readonly samples: number;
  /** Rank of the member that sent it: the receiver's left neighbour, or the message is refused. */
  readonly sender: number;
  /** Encoding of `data`. */
  readonly dtype: RingDtype;
  /**
   * The values, little-endian, `count` elements of `dtype`. Owned by the message: the sender
   * never writes to these bytes after sending, so a transport may queue them without a copy.
   * Any byte offset is accepted (protobuf decoders hand out unaligned slices).
   */
  readonly data: Uint8Array;
}

/**
 * A member's connection to its two ring neighbours. Implementations: {@link createMemoryRing}
 * for tests and in-process rings; a gRPC peer stream between workers.
 *
 * Ordering: messages sent by one member arrive at its right neighbour in the order sent, none
 * lost or duplicated (one stream, as TCP and gRPC give). The all-reduce relies on this and
 * refuses any message that is not exactly the next one it expects.
 *
 * A link serves one ring formation. Successive steps may share it (each all-reduce consumes
 * exactly its own step's messages); after {@link RingLink.abort} (or a neighbour's) it is dead,
 * and the caller re-forms the ring with new links.
 */
export interface RingLink {
  /**
   * Sends a message to the right neighbour (rank + 1 mod worldSize). Resolves when the transport
   * has accepted it: a transport with bounded buffers resolves later, which is how backpressure
   * reaches the sender. Rejects when `signal` aborts (with `signal.reason`) or the link is dead.
   */
  send(message: RingMessage, signal?: AbortSignal): Promise<void>;
  /**
   * The next message from the left neighbour (rank - 1 mod worldSize), in the order it was sent.
   * Rejects when `signal` aborts (with `signal.reason`) or the link is dead (typically with a
   * `CONNECTION_LOST` ShardlineError).
   */
  next(signal?: AbortSignal): Promise<RingMessage>;
  /**
   * Gives up on this ring: this member's pending and later sends and receives fail, and so do
   * the neighbours' calls that depend on it, so a failure travels around the ring and every
   * member's all-reduce settles instead of waiting forever. Idempotent.
   */
  abort(reason: unknown): void;
}
