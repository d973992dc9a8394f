/**
 * Train-stream messages built from chunks: the shapes every worker and coordinator writes.
 */
import { type ChunkTensorOptions, chunkTensor, DEFAULT_CHUNK_BYTES } from './chunking.js';
import type { StepResult, TrainRequest, TrainResponse } from './gen/shardline/v1/coordinator.js';
import type { TensorMeta } from './gen/shardline/v1/tensor.js';

/**
 * A worker's gradient as TrainRequest messages: the chunks of `bytes`, with the step's `result`
 * on the first one. Lazy, like {@link chunkTensor}: pass it to `writeMessages`.
 *
 * @example
 * ```ts
 * await writeMessages(call, gradientMessages(meta, encodeTensor(gradient, job.gradientDtype),
 *   { sampleCount: 64, loss: 0.41, correct: 58, computeSeconds: 0.8 }, job.maxChunkBytes));
 * ```
 */
export function* gradientMessages(
  meta: TensorMeta,
  bytes: Uint8Array,
  result: StepResult,
  maxChunkBytes: number = DEFAULT_CHUNK_BYTES,
  options: ChunkTensorOptions = {},
): Generator<TrainRequest, void, undefined> {
  for (const chunk of chunkTensor(meta, bytes, maxChunkBytes, options)) {
    yield {
      kind: {
        $case: 'gradient',
        value: { result: chunk.chunkIndex === 0 ? result : undefined, chunk },
      },
    };
  }
}

/** The coordinator's weights as TrainResponse messages, lazily; see {@link gradientMessages}. */
export function* weightsMessages(
  meta: TensorMeta,
  bytes: Uint8Array,
  maxChunkBytes: number = DEFAULT_CHUNK_BYTES,
  options: ChunkTensorOptions = {},
): Generator<TrainResponse, void, undefined> {
  for (const chunk of chunkTensor(meta, bytes, maxChunkBytes, options)) {
    yield { kind: { $case: 'weights', value: { chunk } } };
  }
}
