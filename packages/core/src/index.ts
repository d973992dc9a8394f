/**
 * @shardline/core: compute backends, flat parameter vectors, the gradient step, optimizers,
 * learning-rate schedules, errors and logging shared by every Shardline package and app.
 */

export { syncDir, writeFileAtomic } from './atomicFile.js';
export { detectNvidiaGpus, type GpuProbe } from './backends/gpu.js';
export {
  type BackendAttempt,
  type BackendName,
  BackendNames,
  type BackendPreference,
  type BackendSelection,
  locateOptional,
  parseBackendPreference,
  type SelectBackendOptions,
  selectBackend,
} from './backends/selectBackend.js';
export {
  registerWasmTrainingKernels,
  wasmBatchMatMulConfig,
  wasmConv2DBackpropFilterConfig,
  wasmConv2DBackpropInputConfig,
  wasmMaxPoolGradConfig,
} from './backends/wasmTrainingKernels.js';
export { CRC32_IMPLEMENTATION, type Crc32Implementation, crc32, crc32Portable } from './crc32.js';
export {
  formatCount,
  hasErrorCode,
  isShardlineError,
  ShardlineError,
  type ShardlineErrorCode,
  ShardlineErrorCodes,
  type ShardlineErrorOptions,
  toShardlineError,
} from './errors.js';
export {
  computeGradients,
  type GradientResult,
  predictProbabilities,
  type TrainableModel,
  type TrainingBatch,
} from './gradients.js';
export {
  bfloat16BitsToFloat32,
  bfloat16ToFloat32,
  float16BitsToFloat32,
  float16ToFloat32,
  float32ToBfloat16,
  float32ToBfloat16Bits,
  float32ToFloat16,
  float32ToFloat16Bits,
} from './halfFloat.js';
export {
  HEAP_GROWING_PERCENT,
  heapTuning,
  type TuneHeapOptions,
  type TuneHeapResult,
  tuneHeapForStreaming,
} from './heap.js';
export {
  createLogger,
  type LogFields,
  type LogFormat,
  type Logger,
  type LoggerOptions,
  type LogLevel,
  LogLevels,
  type LogSink,
  logLevelOfLine,
  parseLogLevel,
  silentLogger,
} from './logger.js';
export {
  createOptimizer,
  type Optimizer,
  type OptimizerKind,
  OptimizerKinds,
  type OptimizerOptions,
  type OptimizerState,
} from './optimizers.js';
export {
  assertFitsLayout,
  describeLayout,
  fingerprintOf,
  type HasTrainableWeights,
  type ParamLayout,
  type ParamSlot,
  readWeights,
  writeWeights,
} from './params.js';
export {
  createSchedule,
  type LearningRateSchedule,
  type ScheduleKind,
  ScheduleKinds,
  type ScheduleOptions,
} from './schedules.js';
