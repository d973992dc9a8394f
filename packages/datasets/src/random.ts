/**
 * Seeded pseudo-random numbers for shuffling and augmentation.
 *
 * The generator is xoshiro128** (Blackman and Vigna, https://prng.di.unimi.it/), a small, fast
 * 32-bit generator with 128 bits of state, seeded from a list of integer keys through a
 * SplitMix32-style mixer (the seeding Vigna recommends, in its 32-bit form). Everything is
 * 32-bit integer arithmetic with `Math.imul` and `>>>`, which JavaScript defines exactly, so a
 * given key list yields the same stream in every process, on every machine and engine. That is
 * what lets every worker derive the epoch order from (seed, epoch) without shipping indices.
 *
 * Not for cryptography.
 */
import { ShardlineError } from '@shardline/core/errors';

/** A seeded stream of pseudo-random numbers; see {@link createRng}. */
export interface Rng {
  /** The next 32-bit unsigned integer. */
  nextUint32(): number;
  /** A float in [0, 1) with 32 bits of randomness. */
  nextFloat(): number;
  /** An integer in [0, n), exactly uniform (rejection sampling, no modulo bias); 1 <= n <= 2^32. */
  nextInt(n: number): number;
}

const TWO_32 = 4_294_967_296;

/** Separates the streams used for different purposes, so one seed never correlates two of them. */
export const RngStreams = {
  /** The per-epoch order of the training set. */
  shuffle: 0x5348_5546,
  /** Per-sample augmentation parameters. */
  augment: 0x4155_4731,
} as const;

/** Murmur3's 32-bit finaliser: a bijective avalanche of one 32-bit word. */
function fmix32(h: number): number {
  let x = h >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x85eb_ca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2_ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/**
 * Splits a safe integer into two 32-bit words, so seeds above 2^32 (a timestamp, say) keep all
 * their bits instead of silently colliding with smaller ones.
 */
function words(key: number, what: string): [number, number] {
  if (!Number.isSafeInteger(key)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `A random ${what} must be a safe integer: expected e.g. 42, found ${String(key)}.`,
    );
  }
  return [key >>> 0, Math.floor(key / TWO_32) >>> 0];
}

/**
 * Creates a deterministic {@link Rng} from integer keys (a seed, an epoch, a sample index ...).
 * The same keys always give the same stream; any change in any key gives an unrelated stream.
 *
 * @example
 * ```ts
 * const rng = createRng(RngStreams.shuffle, seed, epoch);
 * const coin = rng.nextFloat() < 0.5;
 * ```
 */
export function createRng(...keys: number[]): Rng {
  // Absorb every key (both words) into a running hash; the count keeps (1) and (1, 0) apart.
  let h = fmix32(0x9e37_79b9 ^ keys.length);
  for (const key of keys) {
    for (const word of words(key, 'key')) h = fmix32((h ^ word) + 0x9e37_79b9);
  }
  // SplitMix32: consecutive golden-ratio increments through the finaliser fill the state.
  let sm = h;
  const next = () => {
    sm = (sm + 0x9e37_79b9) >>> 0;
    return fmix32(sm);
  };
  return xoshiro128ss(next(), next(), next(), next());
}

/**
 * The bare xoshiro128** generator from a 128-bit state given as four 32-bit words (not all
 * zero). Prefer {@link createRng}, which derives a well-mixed state from keys; this exists so
 * the generator can be checked against the reference implementation's output.
 */
export function xoshiro128ss(a: number, b: number, c: number, d: number): Rng {
  let s0 = a | 0;
  let s1 = b | 0;
  let s2 = c | 0;
  let s3 = d | 0;
  // The generator's only forbidden state; unreachable from createRng in practice.
  if ((s0 | s1 | s2 | s3) === 0) s0 = 1;

  const nextUint32 = (): number => {
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl(s3, 11);
    return result;
  };

  return {
    nextUint32,
    nextFloat: () => nextUint32() / TWO_32,
    nextInt(n: number): number {
      if (!Number.isInteger(n) || n < 1 || n > TWO_32) {
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          `nextInt needs an integer bound in [1, 2^32]: found ${String(n)}.`,
        );
      }
      // Reject the top sliver that would make `% n` favour small results.
      const limit = TWO_32 - (TWO_32 % n);
      for (;;) {
        const u = nextUint32();
        if (u < limit) return u % n;
      }
    },
  };
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
