/**
 * `shardline-coordinator predict`: the most probable classes of a few image files under a saved
 * model. Images go through the very steps training used: sharp decodes and resizes them to the
 * model's input (`sharpDecoder`, as `loadImageFolder` does) and `makeBatch` scales the bytes to
 * floats with the training LUT, so a training image gets the probabilities it got in training.
 */
import {
  type BackendPreference,
  type Logger,
  predictProbabilities,
  ShardlineError,
  selectBackend,
  silentLogger,
} from '@shardline/core';
import { type ImageSet, identityOrder, makeBatch, sharpDecoder } from '@shardline/datasets';
import { readSavedModel } from './savedModel.js';

/** Classes shown per image when `top` is not given. */
export const DEFAULT_TOP = 3;

/** Images decoded at the same time: sharp works on its own threads, a few keep them busy. */
const DECODE_CONCURRENCY = 4;
/** Images per forward pass. */
const PREDICT_BATCH_SIZE = 64;

/** Options of {@link predictImages}. */
export interface PredictOptions {
  /** The saved model's folder, its model.json, or the run's --out folder. */
  model: string;
  /** Image files (any format sharp reads: PNG, JPEG, WebP, GIF, TIFF, AVIF). */
  images: readonly string[];
  /** Plugin modules for custom layers. */
  plugins?: readonly string[];
  /** Class names, when model.json has none (or to rename them). */
  classNames?: readonly string[];
  /** Classes per image, most probable first. Default {@link DEFAULT_TOP}; at most the class count. */
  top?: number;
  /** Compute backend to select first; absent: whatever TensorFlow.js uses now. */
  backend?: BackendPreference;
  /** Progress. Default: silent. */
  logger?: Logger;
}

/** One class and the probability the model gives it. */
export interface ClassProbability {
  className: string;
  probability: number;
}

/** The outcome for one image: its top classes, or why it could not be read. */
export type ImagePrediction =
  | { path: string; predictions: ClassProbability[] }
  | { path: string; error: string };

/**
 * Predicts the top classes of each image, in the order given. An image that cannot be read
 * gets an `error` entry and the others are still predicted; only problems with the model (or
 * options) throw. The model is disposed before it returns.
 *
 * @throws ShardlineError from {@link readSavedModel}, or `INVALID_ARGUMENT` for a bad `top` or
 *   an empty image list.
 * @example
 * ```ts
 * for (const p of await predictImages({ model: 'runs/quick', images: ['shoe.png'] })) {
 *   if ('error' in p) console.error(p.path, p.error);
 *   else console.log(p.path, p.predictions[0]?.className);
 * }
 * ```
 */
export async function predictImages(options: PredictOptions): Promise<ImagePrediction[]> {
  const top = options.top ?? DEFAULT_TOP;
  if (!Number.isSafeInteger(top) || top < 1) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `top must be a whole number of at least 1: found ${String(top)}.`,
    );
  }
  if (options.images.length === 0) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      'No images given: pass one or more image files to predict.',
    );
  }
  const logger = options.logger ?? silentLogger;
  if (options.backend !== undefined) await selectBackend(options.backend, { logger });
  const saved = await readSavedModel(options.model, {
    ...(options.plugins === undefined ? {} : { plugins: options.plugins }),
    ...(options.classNames === undefined ? {} : { classNames: options.classNames }),
  });
  try {
    const { input, run } = saved;
    const bytesPerImage = input.height * input.width * input.channels;
    const decoded: (Uint8Array | string)[] = new Array(options.images.length);
    await pool(options.images.length, DECODE_CONCURRENCY, async (i) => {
      try {
        const pixels = await sharpDecoder.decode(options.images[i]!, input);
        decoded[i] =
          pixels.length === bytesPerImage
            ? pixels
            : `decoded to ${pixels.length} bytes, expected ${bytesPerImage}`;
      } catch (error) {
        decoded[i] = firstLine(error);
      }
    });
    const good = decoded.flatMap((d, i) => (typeof d === 'string' ? [] : [i]));
    const set: ImageSet<Uint8Array> = {
      images: new Uint8Array(good.length * bytesPerImage),
      labels: new Uint8Array(good.length),
      count: good.length,
      height: input.height,
      width: input.width,
      channels: input.channels,
    };
    for (const [k, i] of good.entries()) {
      set.images.set(decoded[i] as Uint8Array, k * bytesPerImage);
    }
    const numClasses = run.classNames.length;
    const shown = Math.min(top, numClasses);
    const results: ImagePrediction[] = options.images.map((path, i) => {
      const d = decoded[i]!;
      return typeof d === 'string'
        ? { path, error: `not a readable image: ${d}` }
        : { path, predictions: [] };
    });
    const order = identityOrder(set.count);
    for (let start = 0; start < set.count; start += PREDICT_BATCH_SIZE) {
      // makeBatch: the same uint8 -> float32 scaling (pixel / 255) training batches get.
      const batch = makeBatch(set, order.subarray(start, start + PREDICT_BATCH_SIZE));
      const probabilities = predictProbabilities(saved.model, batch.xs, batch.shape);
      for (let row = 0; row < batch.size; row++) {
        const scores = probabilities.subarray(row * numClasses, (row + 1) * numClasses);
        results[good[start + row]!] = {
          path: options.images[good[start + row]!]!,
          predictions: topClasses(scores, run.classNames, shown),
        };
      }
    }
    logger.debug('predicted', {
      images: good.length,
      unreadable: options.images.length - good.length,
    });
    return results;
  } finally {
    saved.model.dispose();
  }
}

/** The `k` most probable classes, most probable first; ties keep label order. */
function topClasses(
  scores: Float32Array,
  classNames: readonly string[],
  k: number,
): ClassProbability[] {
  return Array.from(scores, (probability, label) => ({ label, probability }))
    .sort((a, b) => b.probability - a.probability || a.label - b.label)
    .slice(0, k)
    .map(({ label, probability }) => ({ className: classNames[label]!, probability }));
}

function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n')[0]!.slice(0, 200);
}

/** Runs `task` over 0..n-1, at most `limit` at a time. */
async function pool(n: number, limit: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
}
