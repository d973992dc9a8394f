/**
 * @shardline/worker: the worker side of Shardline. The CLI (`shardline-worker`) joins a
 * coordinator over gRPC and computes gradients with the in-process worker of
 * @shardline/training; `runWorker` does the same from code. `WORKER_SETTINGS` is the table of
 * the CLI's settings (flag, environment variable, config-file key), for tools that check
 * deployment files against it; `runDoctor` is `shardline-worker doctor`. In ring mode the
 * worker also serves a peer endpoint (`WorkerOptions.peer`, `PeerEndpointSettings`).
 * `createWorkerMetrics` and `serveWorkerMetrics` are `--metrics-listen` (Prometheus).
 */

export { type BackoffOptions, retryWithBackoff } from './backoff.js';
export {
  CONFIG_FILE_KEYS,
  formatConfig,
  type ResolvedWorkerConfig,
  readConfigFile,
  requireCoordinator,
  resolveWorkerConfig,
  type SettingKey,
  WORKER_ENV_VARIABLES,
  WORKER_SETTINGS,
  WORKER_SETTINGS_MODEL,
  type WorkerConfigInput,
  type WorkerSettings,
} from './config.js';
export {
  COORDINATOR_HEALTH_SERVICE,
  type CoordinatorCheck,
  type CoordinatorCheckOptions,
  checkCoordinator,
} from './coordinatorCheck.js';
export { type DoctorOptions, type DoctorReport, formatDoctorReport, runDoctor } from './doctor.js';
export {
  CUDA_CACHE_MINIMUM,
  CUDA_CACHE_RECOMMENDED,
  CUDA_LIBRARIES,
  type CudaCacheReport,
  compareVersions,
  compilesPtxAtStartup,
  findSharedLibraries,
  type GpuDevice,
  type GpuReport,
  inspectCudaCache,
  inspectGpus,
  type LibraryLookup,
  type LibrarySearchOptions,
  parseGpuQuery,
  readLdconfigCache,
  TFJS_NODE_GPU_REQUIREMENTS,
} from './gpuEnvironment.js';
export {
  checkMetricsListen,
  type MetricsServer,
  type MetricsServerOptions,
  serveWorkerMetrics,
} from './metrics/metricsServer.js';
export {
  CONNECTION_STATES,
  type ConnectionState,
  createWorkerMetrics,
  type WorkerMetrics,
  type WorkerMonitor,
} from './metrics/workerMetrics.js';
export {
  diagnoseLoadError,
  type MissingLibrary,
  NATIVE_PACKAGES,
  type NativePackage,
  type NativePackageProbe,
  type NativeProbeOptions,
  parseTensorflowLog,
  probeNativePackage,
} from './nativeProbe.js';
export type { PeerEndpointSettings } from './peer/peerEndpoint.js';
export {
  createWorkerProgram,
  DOCTOR_COORDINATOR_TIMEOUT_S,
  runWorkerCli,
  type WorkerCliContext,
  type WorkerStreams,
} from './program.js';
export { runWorker, type WorkerOptions, type WorkerOutcome } from './session.js';
