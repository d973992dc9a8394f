/**
 * @shardline/training: the contract the coordinator and its workers share (the worker
 * interface, shares, weights snapshots, membership, exit statuses), the in-process workers (star
 * and ring), and the synchronous data-parallel trainer that runs over any of them, in star or
 * ring mode. Both apps import it; neither imports the other (as nice-grpc-common sits under
 * nice-grpc's client and server).
 */

export { averageGradients } from './averageGradients.js';
export {
  EVALUATION_TOP_K,
  type EvalAssignment,
  evaluationTopK,
  fixedMembership,
  isRingAbort,
  isRingWorker,
  type Membership,
  MISCLASSIFIED_KEPT,
  type ReplicaEvaluation,
  type ReplicaState,
  type RingFormation,
  type RingPeer,
  type RingShareAssignment,
  type RingShareReport,
  type RingTrainingWorker,
  ringAbortError,
  type ShareAssignment,
  type ShareResult,
  type TrainingWorker,
  type WeightsSnapshot,
} from './contract.js';
export type { EpochMetrics, StepProgress, TrainingEvents } from './events.js';
export { EXIT_COORDINATOR_STOPPED } from './exitCodes.js';
export {
  createLocalWorker,
  evaluateSlice,
  type LocalWorkerOptions,
  warmUp,
} from './localWorker.js';
export {
  checkEvaluationReport,
  checkShareReport,
  classCounts,
  type ShareNumbers,
} from './reports.js';
export {
  createLocalRingWorker,
  createMemoryRingNetwork,
  type LocalRingWorkerOptions,
  type MemoryRingNetwork,
} from './ring/localRingWorker.js';
export {
  createMemoryRing,
  type MemoryRingOptions,
} from './ring/memoryRing.js';
export { float32Checksum } from './ring/payload.js';
export { type RingSegment, ringSegments } from './ring/plan.js';
export {
  createReplica,
  type Replica,
  type ReplicaOptimizerSpec,
  type ReplicaOptions,
} from './ring/replica.js';
export {
  type RingAllReduceOptions,
  type RingResult,
  ringAllReduce,
} from './ring/ringAllReduce.js';
export type { RingDtype, RingLink, RingMessage, RingPhase } from './ring/types.js';
export {
  type RunningSums,
  runSynchronousTraining,
  type SyncTrainingOptions,
  type SyncTrainingResult,
  type TrainerCheckpoint,
  type TrainerConfig,
} from './syncTrainer.js';
