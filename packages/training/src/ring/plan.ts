/**
 * The ring's schedule: how the vector is cut into segments and chunks, and which chunk each
 * member sends and receives, in which order. It is a pure function of (rank, world size,
 * length, chunk size), so every member derives the same cut without talking, and a receiver
 * knows exactly which message must come next.
 */
import type { RingPhase } from './types.js';

/** One of the worldSize contiguous parts of the vector. */
export interface RingSegment {
  /** Index of the first element in the whole vector. */
  readonly start: number;
  /** Number of elements (0 when the vector is shorter than the world size). */
  readonly size: number;
}

/**
 * The cut of a vector of `length` elements into `worldSize` contiguous segments whose sizes
 * differ by at most one (the first `length % worldSize` get one more). Every member computes the
 * same cut, which is what lets a receiver check each chunk's offset and size.
 *
 * @example
 * ```ts
 * ringSegments(10, 4); // sizes 3, 3, 2, 2 starting at 0, 3, 6, 8
 * ```
 */
export function ringSegments(length: number, worldSize: number): RingSegment[] {
  const base = Math.floor(length / worldSize);
  const extra = length % worldSize;
  const segments: RingSegment[] = [];
  for (let i = 0; i < worldSize; i++) {
    segments.push({ start: i * base + Math.min(i, extra), size: base + (i < extra ? 1 : 0) });
  }
  return segments;
}

/** One message of the schedule, without its values. */
export interface PlannedChunk {
  readonly phase: RingPhase;
  readonly round: number;
  readonly segment: number;
  readonly chunk: number;
  readonly offset: number;
  readonly count: number;
  /** True for the first chunk of its round (where the round's sample count is taken). */
  readonly first: boolean;
}

/** Both directions of one member's schedule. */
export interface RingPlan {
  /** What this member sends to its right neighbour, in order. */
  readonly send: readonly PlannedChunk[];
  /** What this member receives from its left neighbour, in order. */
  readonly receive: readonly PlannedChunk[];
  /**
   * Number of leading sends that depend on nothing received (reduce-scatter round 0: the
   * member's own weighted gradient). Send i >= lead forwards receive i - lead, so one counter
   * of messages received is all the sender needs to wait on.
   */
  readonly lead: number;
  /** The segment this member reduces completely and divides (it owns it): rank + 1 mod N. */
  readonly owned: number;
}

const mod = (a: number, n: number): number => ((a % n) + n) % n;

/**
 * The chunks of one segment. Every segment has at least one chunk, an empty one for an empty
 * segment, so that the reduce-scatter's sample counts travel through every round even when the
 * vector is shorter than the world size.
 */
function chunksOf(
  phase: RingPhase,
  round: number,
  segmentIndex: number,
  segment: RingSegment,
  chunkElements: number,
): PlannedChunk[] {
  const chunks: PlannedChunk[] = [];
  const n = Math.max(1, Math.ceil(segment.size / chunkElements));
  for (let j = 0; j < n; j++) {
    const from = j * chunkElements;
    chunks.push({
      phase,
      round,
      segment: segmentIndex,
      chunk: j,
      offset: segment.start + from,
      count: Math.min(chunkElements, segment.size - from),
      first: j === 0,
    });
  }
  return chunks;
}

/**
 * One member's schedule. In reduce-scatter round k, rank r sends its running sum of segment
 * (r - k) mod N and receives segment (r - 1 - k) mod N, to which it adds its own share; after
 * N - 1 rounds it holds segment (r + 1) mod N fully reduced. In all-gather round k it sends
 * segment (r + 1 - k) mod N (first its own, then what it just received) and receives segment
 * (r - k) mod N; after N - 1 rounds it has every segment.
 */
export function planRing(
  rank: number,
  worldSize: number,
  length: number,
  chunkElements: number,
): RingPlan {
  const segments = ringSegments(length, worldSize);
  const send: PlannedChunk[] = [];
  const receive: PlannedChunk[] = [];
  const add = (into: PlannedChunk[], phase: RingPhase, round: number, s: number) => {
    into.push(...chunksOf(phase, round, s, segments[s]!, chunkElements));
  };
  for (let k = 0; k < worldSize - 1; k++) {
    add(send, 'reduce-scatter', k, mod(rank - k, worldSize));
    add(receive, 'reduce-scatter', k, mod(rank - 1 - k, worldSize));
  }
  for (let k = 0; k < worldSize - 1; k++) {
    add(send, 'all-gather', k, mod(rank + 1 - k, worldSize));
    add(receive, 'all-gather', k, mod(rank - k, worldSize));
  }
  const lead =
    worldSize > 1 ? chunksOf('reduce-scatter', 0, 0, segments[rank]!, chunkElements).length : 0;
  return { send, receive, lead, owned: mod(rank + 1, worldSize) };
}
