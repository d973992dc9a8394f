/**
 * Ring all-reduce of sample-weighted gradients (the data plane of `--exchange ring`), independent
 * of the transport: members talk only through a {@link RingLink} to their two neighbours.
 *
 * Why a ring: with a coordinator in the middle, its one link carries 2 x N x gradient bytes per
 * step. In a ring each member sends (and receives) 2 (N - 1) / N x gradient bytes whatever N is,
 * which is the least any all-reduce can move per member (Patarasuk and Yuan, 2009): N - 1
 * reduce-scatter rounds leave each member owning one fully reduced segment, N - 1 all-gather
 * rounds hand every owner's segment to everyone. Segments travel in chunks of at most
 * `maxChunkBytes`, and a member forwards chunk j of a round as soon as it has it, so all N links
 * carry data at once instead of waiting for whole segments.
 *
 * Why the owner divides: each segment's sum is complete at exactly one member, its owner, which
 * divides it by the total sample count once and then hands out those bytes. The all-gather only
 * copies them, so every replica ends with the same bits (no member recomputes anything another
 * already rounded), the division costs 1/N of the vector per member, and the all-gather carries
 * averaged values at gradient scale (what a 16-bit encoding will need later).
 *
 * Why the sample counts ride along: every reduce-scatter message carries the number of samples
 * behind its partial sum, so the owner learns the total with no extra round trip, and every
 * all-gather message carries that total, which each receiver checks against its own.
 *
 * 16-bit traffic (`float16`, `bfloat16`: half the bytes) carries partial *means* instead of
 * partial sums: each member folds its gradient in as (s x m + n x g) / (s + n), so every value on
 * the wire stays at gradient scale (a sum of n x g would leave float16's range, 65504, at a few
 * hundred samples), and the owner's last fold is the average itself. The owner then rounds its
 * segment to the wire's dtype before handing it out, so it keeps exactly the bits the others
 * receive, and every replica stays bit-identical as with float32.
 */
import { formatCount, ShardlineError, toShardlineError } from '@shardline/core';
import {
  decodeValues,
  encodeValues,
  float32Checksum,
  RING_DTYPE_BYTES,
  roundToDtype,
} from './payload.js';
import { type PlannedChunk, planRing, type RingPlan } from './plan.js';
import type { RingDtype, RingLink, RingMessage } from './types.js';

/** Options of {@link ringAllReduce}: one member's view of one step's all-reduce. */
export interface RingAllReduceOptions {
  /** This member's position in the ring, 0 to worldSize - 1; it sends to rank + 1. */
  rank: number;
  /** Number of members; every member must pass the same value. */
  worldSize: number;
  /**
   * This member's mean-loss gradient; same length on every member. Only read, never written.
   * Ignored (not even read) when `sampleCount` is 0, so a member with no share may pass
   * anything of the right length.
   */
  gradient: Float32Array;
  /** Samples behind `gradient`, its weight in the average; 0 means it contributes nothing. */
  sampleCount: number;
  /** The connection to this member's neighbours, for this ring formation. */
  link: RingLink;
  /**
   * Largest payload of one message in bytes (the pipelining unit); at least one element's width.
   * Smaller chunks start the pipeline sooner and cost more per-message overhead; the gRPC
   * transport will want 256 KiB to 1 MiB, like the protocol's tensor chunks.
   */
  maxChunkBytes: number;
  /** The training step; carried by every message and checked on every receipt. */
  step: number;
  /** Aborting it rejects the call promptly with `signal.reason` and tears the ring down. */
  signal?: AbortSignal;
  /**
   * Encoding of the values on the wire (default `float32`). `float16` and `bfloat16` halve the
   * traffic; every member must pass the same dtype (a message in another one is refused). The
   * result is then the average rounded to that dtype, still bit-identical on every member.
   */
  dtype?: RingDtype;
}

/** What every member of a completed all-reduce gets back. */
export interface RingResult {
  /**
   * sum(n_i * g_i) / sum(n_i) over the members, float32, in fresh memory (never the caller's
   * buffer): bit-identical on every member of the ring. All zeros when every count is 0.
   */
  gradient: Float32Array;
  /** sum(n_i): the total sample count, the same on every member. */
  samples: number;
  /**
   * CRC-32 of `gradient`'s little-endian bytes, 8 hex digits: members report it so the
   * coordinator can check that they all hold the same bytes before it commits the step.
   */
  checksum: string;
  /** Payload bytes this member sent: 2 (N - 1) / N x the vector's bytes, within 8 bytes. */
  sentBytes: number;
  /** Messages this member sent (each costs the transport's per-message overhead). */
  sentMessages: number;
}

/**
 * One member's part in a ring all-reduce: resolves with the sample-weighted average of all
 * members' gradients once this member holds every averaged segment. Every member of the ring
 * calls it for the same step with the same `worldSize`, vector length and `maxChunkBytes`.
 *
 * Failures: a message that is not exactly the next one expected (wrong step, sender, phase,
 * round, segment, chunk, size, dtype or sample count) is refused with a `MISMATCH` or
 * `DATA_CORRUPT` ShardlineError naming the peer's rank, the step and what was expected and
 * found; non-finite values with `NUMERIC`. On any failure or abort the call rejects promptly and
 * aborts its link, so the neighbours' calls fail too (`CONNECTION_LOST`) and every member
 * settles; nothing is written into the caller's memory. A member may still complete when a
 * neighbour fails after sending it everything: whether a step is applied is decided by comparing
 * every member's `checksum`, not by this call.
 *
 * Float32 rounding: each element's sum is formed in ring order (a fixed order per segment), so
 * the result differs from `averageGradients` (the star mode's average) only in rounding: at most about
 * (2N + 1) x 2^-24 x sum(w_i |g_i|) with w_i = n_i / sum(n). Sample counts up to 2^29 keep
 * n_i x g_i exact before it is rounded once to float32. With a 16-bit dtype each of the N - 1
 * hops and the final value round to that dtype (2^-11 relative for float16, 2^-8 for bfloat16),
 * as the star mode's 16-bit gradients round once per worker.
 *
 * @example
 * ```ts
 * const { gradient, samples, checksum } = await ringAllReduce({
 *   rank, worldSize, link, gradient: share.gradient, sampleCount: share.sampleCount,
 *   step, maxChunkBytes: 1024 * 1024, signal,
 * });
 * optimizer.apply(params, gradient, learningRate);
 * ```
 */
export async function ringAllReduce(options: RingAllReduceOptions): Promise<RingResult> {
  try {
    checkOptions(options);
    if (options.signal?.aborted) throw options.signal.reason;
    if (options.sampleCount > 0) checkOwnGradient(options);
    if (options.worldSize === 1) return alone(options);
    return await new RingRun(options).run();
  } catch (error) {
    // Whatever stops this member stops the ring: without this, neighbours waiting on a member
    // that never started (bad options, an early abort) would wait until their own deadline.
    const reason =
      options.signal?.aborted && error === options.signal.reason ? error : toShardlineError(error);
    try {
      options.link?.abort(reason);
    } catch {
      // A transport that fails to close has nothing more to tell us than the error we report.
    }
    throw reason;
  }
}

/** A ring of one: the average of one gradient is that gradient, exactly (no rounding). */
function alone(options: RingAllReduceOptions): RingResult {
  const { gradient: g, sampleCount } = options;
  const gradient = sampleCount > 0 ? g.slice() : new Float32Array(g.length);
  return {
    gradient,
    samples: sampleCount,
    checksum: float32Checksum(gradient),
    sentBytes: 0,
    sentMessages: 0,
  };
}

function invalid(message: string, details: Record<string, unknown>): ShardlineError {
  return new ShardlineError('INVALID_ARGUMENT', `Ring all-reduce: ${message}`, { details });
}

function checkOptions(o: RingAllReduceOptions): void {
  const dtype = o.dtype ?? 'float32';
  if (!Number.isSafeInteger(o.worldSize) || o.worldSize < 1) {
    throw invalid(`worldSize must be a whole number, at least 1; found ${o.worldSize}.`, {
      worldSize: o.worldSize,
    });
  }
  if (!Number.isSafeInteger(o.rank) || o.rank < 0 || o.rank >= o.worldSize) {
    throw invalid(`rank must be a whole number from 0 to ${o.worldSize - 1}; found ${o.rank}.`, {
      rank: o.rank,
      worldSize: o.worldSize,
    });
  }
  if (!Number.isSafeInteger(o.step) || o.step < 0) {
    throw invalid(`step must be a whole number, at least 0; found ${o.step}.`, { step: o.step });
  }
  if (!Number.isSafeInteger(o.sampleCount) || o.sampleCount < 0) {
    throw invalid(`sampleCount must be a whole number, at least 0; found ${o.sampleCount}.`, {
      sampleCount: o.sampleCount,
    });
  }
  if (!(o.gradient instanceof Float32Array)) {
    throw invalid('gradient must be a Float32Array.', {});
  }
  if (!Object.hasOwn(RING_DTYPE_BYTES, dtype)) {
    throw invalid(`dtype ${String(dtype)} is not supported; use float32, float16 or bfloat16.`, {
      dtype,
    });
  }
  const width = RING_DTYPE_BYTES[dtype];
  if (!Number.isSafeInteger(o.maxChunkBytes) || o.maxChunkBytes < width) {
    throw invalid(
      `maxChunkBytes must be a whole number of bytes, at least ${width} (one ${dtype} value); ` +
        `found ${o.maxChunkBytes}. 1 MiB is a good default.`,
      { maxChunkBytes: o.maxChunkBytes },
    );
  }
}

/**
 * A member's own gradient must be finite before it goes into a partial sum: added in, a NaN
 * would reach its neighbour, which would then blame the wrong member for it.
 */
function checkOwnGradient(o: RingAllReduceOptions): void {
  const g = o.gradient;
  for (let i = 0; i < g.length; i++) {
    const v = g[i]!;
    if (v - v !== 0) {
      throw new ShardlineError(
        'NUMERIC',
        `Ring all-reduce, step ${o.step}, rank ${o.rank}: this member's own gradient holds ` +
          `${v} at index ${formatCount(i)}; expected finite values. Its share's computation ` +
          'diverged (lower the learning rate, or check the inputs).',
        { details: { step: o.step, rank: o.rank, index: i, value: v } },
      );
    }
  }
}

const where = (c: {
  phase: unknown;
  round: unknown;
  segment: unknown;
  chunk: unknown;
  offset: unknown;
}): string =>
  `${String(c.phase)} round ${String(c.round)} segment ${String(c.segment)} chunk ` +
  `${String(c.chunk)} at offset ${String(c.offset)}`;

/** The state of one member's all-reduce: two loops, one sending, one receiving. */
class RingRun {
  private readonly plan: RingPlan;
  private readonly left: number;
  private readonly width: number;
  private readonly dtype: RingDtype;
  /** The working buffer: partial sums, then the averaged result. Never the caller's memory. */
  private readonly work: Float32Array;
  private readonly controller = new AbortController();
  private readonly signal: AbortSignal;
  /** Sample count carried by the first chunk of each reduce-scatter round received. */
  private readonly partialSamples: number[] = [];
  private total = -1;
  private received = 0;
  private waiter: { need: number; resolve: () => void; reject: (e: unknown) => void } | undefined;
  private failure: { error: unknown } | undefined;
  private sentBytes = 0;
  private sentMessages = 0;

  constructor(private readonly o: RingAllReduceOptions) {
    this.dtype = o.dtype ?? 'float32';
    this.width = RING_DTYPE_BYTES[this.dtype];
    this.plan = planRing(
      o.rank,
      o.worldSize,
      o.gradient.length,
      Math.floor(o.maxChunkBytes / this.width),
    );
    this.left = (o.rank - 1 + o.worldSize) % o.worldSize;
    this.work = new Float32Array(o.gradient.length);
    this.signal = o.signal
      ? AbortSignal.any([o.signal, this.controller.signal])
      : this.controller.signal;
  }

  /**
   * Sending and receiving run concurrently: a member that only received after sending a whole
   * round would deadlock with bounded buffers (everyone blocked sending, nobody receiving).
   */
  run(): Promise<RingResult> {
    return new Promise<RingResult>((resolve, reject) => {
      let finished = 0;
      const done = () => {
        finished += 1;
        if (finished === 2 && !this.failure) resolve(this.result());
      };
      const fail = (error: unknown) => {
        if (this.failure) return;
        this.failure = { error };
        // Stop the other loop now (it may be waiting on the link), and tell the neighbours.
        this.controller.abort(error);
        this.waiter?.reject(error);
        reject(error);
      };
      this.sendAll().then(done, fail);
      this.receiveAll().then(done, fail);
    });
  }

  private result(): RingResult {
    return {
      gradient: this.work,
      samples: this.total,
      checksum: float32Checksum(this.work),
      sentBytes: this.sentBytes,
      sentMessages: this.sentMessages,
    };
  }

  /** Resolves once `need` messages have been received and absorbed. */
  private receivedAtLeast(need: number): Promise<void> {
    if (this.received >= need) return Promise.resolve();
    if (this.failure) return Promise.reject(this.failure.error);
    return new Promise<void>((resolve, reject) => {
      this.waiter = { need, resolve, reject };
    });
  }

  private async sendAll(): Promise<void> {
    const { plan, o } = this;
    for (let i = 0; i < plan.send.length; i++) {
      const c = plan.send[i]!;
      let data: Uint8Array;
      let samples: number;
      if (i < plan.lead) {
        data = this.ownContribution(c);
        samples = o.sampleCount;
      } else {
        // Send i forwards what receive i - lead produced (see planRing).
        await this.receivedAtLeast(i - plan.lead + 1);
        data = encodeValues(this.work, c.offset, c.count, this.dtype);
        samples =
          c.phase === 'reduce-scatter'
            ? this.partialSamples[c.round - 1]! + o.sampleCount
            : this.total;
      }
      const message: RingMessage = {
        step: o.step,
        phase: c.phase,
        round: c.round,
        segment: c.segment,
        chunk: c.chunk,
        offset: c.offset,
        count: c.count,
        samples,
        sender: o.rank,
        dtype: this.dtype,
        data,
      };
      await o.link.send(message, this.signal);
      this.sentBytes += data.byteLength;
      this.sentMessages += 1;
    }
  }

  /**
   * The start of a segment's reduction, from this member's own gradient: n_r x g_r (a partial
   * sum) in float32, g_r itself (a partial mean over n_r samples) in 16 bits.
   */
  private ownContribution(c: PlannedChunk): Uint8Array {
    const { gradient: g, sampleCount: n } = this.o;
    const values = new Float32Array(c.count);
    // A member without samples sends zeros: its gradient may be garbage, and 0 x NaN is NaN.
    if (n > 0) {
      if (this.dtype === 'float32')
        for (let i = 0; i < c.count; i++) values[i] = n * g[c.offset + i]!;
      else values.set(g.subarray(c.offset, c.offset + c.count));
      this.checkLocal(values, c.offset);
    }
    return encodeValues(values, 0, c.count, this.dtype);
  }

  private async receiveAll(): Promise<void> {
    const { plan, o } = this;
    const last = o.worldSize - 2;
    for (let i = 0; i < plan.receive.length; i++) {
      const expected = plan.receive[i]!;
      const message = await o.link.next(this.signal);
      const values = this.check(message, expected);
      if (expected.phase === 'all-gather') {
        // A copy of the owner's bytes, bit for bit: this is why every replica ends identical.
        this.work.set(values, expected.offset);
      } else if (this.dtype === 'float32') {
        this.accumulate(values, expected.offset, expected.round === last);
      } else {
        this.foldMean(values, message.samples, expected.offset, expected.round === last);
      }
      this.received = i + 1;
      if (this.waiter && this.received >= this.waiter.need) {
        const { resolve } = this.waiter;
        this.waiter = undefined;
        resolve();
      }
    }
  }

  /**
   * work[offset + i] = values[i] + n x g[offset + i], rounded to float32 when stored; in the
   * owner's last reduce-scatter round (`final`) then divided by the total sample count, or all
   * zeros when no member had samples. The sum is stored (rounded) before the division, so the
   * result is what any float32 implementation of the same order computes.
   */
  private accumulate(values: Float32Array, offset: number, final: boolean): void {
    const { gradient: g, sampleCount: n } = this.o;
    const w = this.work;
    const end = offset + values.length;
    if (n > 0) {
      for (let i = 0; i < values.length; i++) w[offset + i] = values[i]! + n * g[offset + i]!;
      this.checkLocal(w.subarray(offset, end), offset);
    } else {
      w.set(values, offset);
    }
    if (!final) return;
    const total = this.total;
    if (total > 0) for (let i = offset; i < end; i++) w[i] = w[i]! / total;
    else w.fill(0, offset, end);
  }

  /**
   * The 16-bit reduce-scatter: work = (s x m + n x g) / (s + n), the mean over the s samples
   * behind the received partial mean m and this member's n. Formed in float64, where n x g and
   * s x m are exact, and rounded once to float32. With n = 0 it is m, with s = 0 it is g,
   * exactly. In the owner's last round (`final`) the result is the average, which the owner
   * rounds to the wire's dtype: the bits its all-gather will hand to everyone.
   */
  private foldMean(values: Float32Array, s: number, offset: number, final: boolean): void {
    const { gradient: g, sampleCount: n } = this.o;
    const w = this.work;
    const end = offset + values.length;
    const t = s + n;
    if (n === 0) w.set(values, offset);
    else
      for (let i = 0; i < values.length; i++)
        w[offset + i] = (s * values[i]! + n * g[offset + i]!) / t;
    const segment = w.subarray(offset, end);
    if (final) roundToDtype(segment, this.dtype);
    // What this member hands on next (forwarded partial mean, or the owner's average) must fit.
    this.checkLocal(segment, offset);
  }

  /**
   * Values this member is about to hand on must be finite: a sum of finite values can still
   * overflow float32, and a finite float32 value can overflow float16's range (65504). Either
   * is this member's fault to report, before a neighbour refuses it and blames the wrong member.
   */
  private checkLocal(values: Float32Array, offset: number): void {
    const float32 = this.dtype === 'float32';
    const limit = this.dtype === 'float16' ? 65504 : Number.MAX_VALUE;
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (v - v !== 0 || Math.abs(v) > limit) {
        throw new ShardlineError(
          'NUMERIC',
          `Ring all-reduce, step ${this.o.step}, rank ${this.o.rank}: ` +
            (float32
              ? `the sample-weighted sum overflowed float32 at index ${formatCount(offset + i)} (${v}). `
              : `the value ${v} at index ${formatCount(offset + i)} does not fit ${this.dtype} ` +
                `(largest finite: ${this.dtype === 'float16' ? '65504' : 'about 3.4e38'}). `) +
            'The gradients are too large: lower the learning rate or clip the gradients' +
            (this.dtype === 'float16' ? ', or use --gradient-dtype bfloat16 or float32.' : '.'),
          {
            details: { step: this.o.step, rank: this.o.rank, index: offset + i, dtype: this.dtype },
          },
        );
      }
    }
  }

  private refuse(
    code: 'MISMATCH' | 'DATA_CORRUPT' | 'NUMERIC',
    what: string,
    details: Record<string, unknown>,
  ): ShardlineError {
    const { step, rank } = this.o;
    return new ShardlineError(
      code,
      `Ring all-reduce, step ${step}, rank ${rank}: refused the message from rank ${this.left} ` +
        `(left neighbour): ${what} Nothing from it was used; the ring must be re-formed without ` +
        `rank ${this.left} or retried.`,
      { details: { step, rank, peer: this.left, ...details } },
    );
  }

  /**
   * Checks a received message against the one expected next and returns its values. Every
   * field is compared, so that a confused or rogue peer cannot get a single value into this
   * member's sums.
   */
  private check(m: RingMessage, e: PlannedChunk): Float32Array {
    const { step } = this.o;
    if (m.step !== step) {
      throw this.refuse('MISMATCH', `it belongs to step ${m.step}, expected step ${step}.`, {
        expected: step,
        found: m.step,
      });
    }
    if (m.sender !== this.left) {
      throw this.refuse(
        'MISMATCH',
        `it says it comes from rank ${m.sender}, expected rank ${this.left}.`,
        { expected: this.left, found: m.sender },
      );
    }
    if (
      m.phase !== e.phase ||
      m.round !== e.round ||
      m.segment !== e.segment ||
      m.chunk !== e.chunk ||
      m.offset !== e.offset
    ) {
      throw this.refuse('DATA_CORRUPT', `out of order: expected ${where(e)}, found ${where(m)}.`, {
        expected: where(e),
        found: where(m),
      });
    }
    if (m.dtype !== this.dtype) {
      throw this.refuse('MISMATCH', `its values are ${m.dtype}, expected ${this.dtype}.`, {
        expected: this.dtype,
        found: m.dtype,
      });
    }
    const bytes = e.count * this.width;
    if (m.count !== e.count || !(m.data instanceof Uint8Array) || m.data.byteLength !== bytes) {
      const found = m.data instanceof Uint8Array ? m.data.byteLength : typeof m.data;
      throw this.refuse(
        'DATA_CORRUPT',
        `${where(e)} has the wrong size: expected ${formatCount(e.count)} values ` +
          `(${formatCount(bytes)} bytes), found count ${m.count} with ${String(found)} bytes. ` +
          'Do all members hold gradients of the same length and use the same maxChunkBytes?',
        { expected: e.count, foundCount: m.count, foundBytes: found },
      );
    }
    this.checkSamples(m, e);
    const values = decodeValues(m.data, this.dtype);
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (v - v !== 0) {
        throw this.refuse(
          'NUMERIC',
          `${where(e)} holds ${v} at index ${formatCount(e.offset + i)}; expected finite values.`,
          { index: e.offset + i, value: String(v) },
        );
      }
    }
    return values;
  }

  /**
   * Sample counts: whole and not negative; the same in every chunk of a reduce-scatter round;
   * in the all-gather, equal to the total this member computed as an owner. A disagreement
   * means two members would divide by different totals.
   */
  private checkSamples(m: RingMessage, e: PlannedChunk): void {
    if (!Number.isSafeInteger(m.samples) || m.samples < 0) {
      throw this.refuse(
        'DATA_CORRUPT',
        `its sample count is ${m.samples}, expected a whole number, at least 0.`,
        { found: m.samples },
      );
    }
    let expected: number | undefined;
    if (e.phase === 'all-gather') expected = this.total;
    else if (!e.first) expected = this.partialSamples[e.round];
    if (expected !== undefined && m.samples !== expected) {
      throw this.refuse(
        'MISMATCH',
        `${where(e)} says ${formatCount(m.samples)} samples, expected ${formatCount(expected)}` +
          `${e.phase === 'all-gather' ? ' (the total this member computed)' : ' (as chunk 0 of this round said)'}.`,
        { expected, found: m.samples },
      );
    }
    if (e.phase === 'reduce-scatter' && e.first) {
      this.partialSamples[e.round] = m.samples;
      if (e.round === this.o.worldSize - 2) {
        this.total = m.samples + this.o.sampleCount;
        if (!Number.isSafeInteger(this.total)) {
          throw this.refuse('DATA_CORRUPT', `its sample count ${m.samples} is too large.`, {
            found: m.samples,
          });
        }
      }
    }
  }
}
