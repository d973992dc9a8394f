/**
 * Evaluation on a held-out set: forward passes in batches (no dropout), streamed into the
 * metrics accumulator, so memory stays bounded whatever the test set's size.
 */
import { predictProbabilities, type TrainableModel } from '@shardline/core';
import { type ImageSet, identityOrder, makeBatch } from '@shardline/datasets';
import { type ClassificationReport, createClassificationAccumulator } from '@shardline/metrics';

/** Loss, accuracy and the full per-class report of one evaluation. */
export interface Evaluation {
  loss: number;
  accuracy: number;
  report: ClassificationReport;
}

/** Evaluates `model` on every image of `set`. */
export function evaluate(
  model: TrainableModel,
  set: ImageSet,
  options: { batchSize: number; classNames: readonly string[] },
): Evaluation {
  const accumulator = createClassificationAccumulator({
    numClasses: options.classNames.length,
    classNames: options.classNames,
    topK: [1, 3],
  });
  const order = identityOrder(set.count);
  for (let start = 0; start < set.count; start += options.batchSize) {
    const batch = makeBatch(
      set,
      order.subarray(start, Math.min(start + options.batchSize, set.count)),
    );
    const probabilities = predictProbabilities(model, batch.xs, batch.shape);
    accumulator.update({ probabilities, labels: batch.labels });
  }
  const report = accumulator.result();
  return { loss: report.loss, accuracy: report.accuracy, report };
}
