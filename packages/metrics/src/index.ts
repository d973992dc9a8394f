/**
 * @shardline/metrics: classification metrics on plain typed arrays (accuracy, cross-entropy,
 * top-k, confusion matrix, per-class precision / recall / F1), streaming and mergeable across
 * workers; throughput meters and step-time statistics; and text tables for the CLI. Needs no
 * TensorFlow.js: pass it `tensor.dataSync()` outputs.
 *
 * Every declaration carries its own JSDoc; this file only groups the exports.
 */

// Streaming and one-shot classification metrics.
export {
  accuracy,
  argmaxRows,
  type BatchSummary,
  type ClassificationAccumulator,
  type ClassificationBatch,
  type ClassificationOptions,
  type ClassificationReport,
  type ClassificationState,
  createClassificationAccumulator,
  evaluateClassification,
  type MisclassifiedSample,
  type TopKAccuracy,
  topKAccuracy,
} from './classification.js';
// Confusion matrices and precision / recall / F1.
export {
  type AverageScores,
  type ClassScore,
  type ClassScores,
  type ConfusionMatrix,
  confusionMatrix,
  precisionRecallF1,
} from './confusion.js';
// Text tables.
export { formatClassificationReport, formatConfusionMatrix } from './format.js';
// Loss.
export {
  createMeanAccumulator,
  crossEntropy,
  DEFAULT_EPSILON,
  type MeanAccumulator,
  type MeanResult,
  type MeanState,
  type ModelOutputs,
} from './loss.js';
// Throughput and timing.
export {
  type Clock,
  createThroughputMeter,
  type DurationSummary,
  quantile,
  startTimer,
  summarizeDurations,
  type ThroughputMeter,
  type ThroughputOptions,
  type ThroughputResult,
  type Timer,
  timed,
} from './throughput.js';
