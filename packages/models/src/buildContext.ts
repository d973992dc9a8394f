/**
 * What a model builder needs to be reproducible: deterministic layer names and seeded weight
 * initialisers. Every model in the registry is built through a {@link ModelBuildContext}, so
 * `createModel(name, { seed })` gives the same weights and the same layer names every time, in
 * any process, however many models that process made before.
 */
import * as tf from '@tensorflow/tfjs';

/** A weight initialiser, as accepted by `kernelInitializer` of tfjs layers. */
export type Initializer = ReturnType<typeof tf.initializers.heNormal>;

/** The seeded initialisers a builder can ask for (the tfjs ones that take a `seed`). */
export type SeededInitializerKind =
  | 'heNormal'
  | 'heUniform'
  | 'glorotNormal'
  | 'glorotUniform'
  | 'leCunNormal'
  | 'leCunUniform';

/** Handed to {@link ModelSpec.build}: the seed and helpers that keep a build deterministic. */
export interface ModelBuildContext {
  /** The model's seed (given by the caller, or drawn at random when it gave none). */
  readonly seed: number;
  /**
   * The next layer name for `prefix`: `conv2d_1`, `conv2d_2`, ... counted per build, not per
   * process, so names do not depend on how many models were made before. Code elsewhere keys
   * weights by these names (`conv2d_1/kernel`).
   */
  layerName(prefix: string): string;
  /**
   * A fresh initialiser of `kind` whose seed is derived from the model seed and the number of
   * initialisers handed out so far; ask for them in layer order and the weights are reproducible.
   */
  initializer(kind: SeededInitializerKind): Initializer;
}

/**
 * Derives a 32-bit seed for stream `stream` (say, the k-th layer) from `seed`, with a
 * murmur3-style finaliser so neighbouring streams get unrelated seeds. Never returns 0: tfjs
 * treats a seed of 0 as "no seed" and falls back to `Math.random()`.
 *
 * @example
 * ```ts
 * deriveSeed(7, 0); // same number in every process
 * ```
 */
export function deriveSeed(seed: number, stream: number): number {
  // Fold seeds above 2^32 in rather than dropping their high bits.
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 2 ** 32) >>> 0;
  let h = Math.imul(lo ^ Math.imul(hi, 0x27d4eb2f), 0x9e3779b1) ^ Math.imul(stream + 1, 0x85ebca6b);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return h >>> 0 || 1;
}

/** Creates the {@link ModelBuildContext} for one build with `seed`. */
export function createBuildContext(seed: number): ModelBuildContext {
  const counts = new Map<string, number>();
  let stream = 0;
  return {
    seed,
    layerName(prefix) {
      const n = (counts.get(prefix) ?? 0) + 1;
      counts.set(prefix, n);
      return `${prefix}_${n}`;
    },
    initializer(kind) {
      const s = deriveSeed(seed, stream++);
      return tf.initializers[kind]({ seed: s });
    },
  };
}

/** A random seed for callers that gave none (uniform over 1 .. 2^32 - 1). */
export function randomSeed(): number {
  return 1 + Math.floor(Math.random() * (2 ** 32 - 1));
}
