/**
 * @shardline/protocol: Shardline's gRPC wire contract. The messages and the CoordinatorService
 * definition are generated from proto/shardline/v1 by ts-proto (src/gen, committed); beside
 * them, the hand-written parts every peer needs: the protocol version check, tensor codecs
 * (float32, float16, bfloat16), chunked transfer with checksums, ShardlineError <-> gRPC status
 * conversion, channel/server option presets, and channel security (the token's metadata and
 * interceptor, TLS PEM files checked at startup).
 */

export {
  type AssembledTensor,
  assertChunkBytes,
  type ChunkTensorOptions,
  checkTransferHeader,
  chunkTensor,
  createTensorAssembler,
  DEFAULT_CHUNK_BYTES,
  DEFAULT_MAX_TENSOR_BYTES,
  elementCountOf,
  MAX_CHUNK_BYTES,
  MIN_CHUNK_BYTES,
  nextTransferId,
  payloadBytesOf,
  type TensorAssembler,
  type TensorAssemblerOptions,
  type TransferHeader,
  type TransferHeaderChunk,
} from './chunking.js';
export {
  bfloat16BitsToFloat32,
  bfloat16ToFloat32,
  bytesPerElement,
  type DecodeTensorOptions,
  decodeTensor,
  dtypeName,
  encodeTensor,
  float16BitsToFloat32,
  float16ToFloat32,
  float32ToBfloat16,
  float32ToBfloat16Bits,
  float32ToFloat16,
  float32ToFloat16Bits,
  HOST_IS_LITTLE_ENDIAN,
  SUPPORTED_DTYPES,
} from './codecs.js';
export { CRC32_IMPLEMENTATION, type Crc32Implementation, crc32, crc32Portable } from './crc32.js';
export { exchangeLogFields } from './exchangeLog.js';
export {
  Attach,
  ClassificationCounts,
  CoordinatorServiceClient,
  type CoordinatorServiceServer,
  CoordinatorServiceService,
  DataType,
  dataTypeFromJSON,
  dataTypeToJSON,
  EpochMetrics,
  Evaluate,
  EvaluationResult,
  FetchDatasetRequest,
  FetchDatasetResponse,
  GetStatusRequest,
  GetStatusResponse,
  GradientChunk,
  Heartbeat,
  HyperparameterValue,
  ImageFolderDataset,
  JobSpec,
  JobState,
  JoinRequest,
  JoinResponse,
  jobStateFromJSON,
  jobStateToJSON,
  LeaveRequest,
  LeaveResponse,
  ModelArtifacts,
  NumberList,
  PluginRequirement,
  StepAssignment,
  StepResult,
  Stop,
  StopReason,
  stopReasonFromJSON,
  stopReasonToJSON,
  TensorChunk,
  TensorMeta,
  TrainRequest,
  TrainResponse,
  WeightsChunk,
  WorkerError,
  WorkerState,
  WorkerStatus,
  workerStateFromJSON,
  workerStateToJSON,
} from './gen/index.shardline.v1.js';
export { gradientMessages, weightsMessages } from './messages.js';
export {
  applyServerFlowControlWindow,
  CHANNEL_OPTIONS,
  FLOW_CONTROL_WINDOW_BYTES,
  KEEPALIVE_TIME_MS,
  KEEPALIVE_TIMEOUT_MS,
  MESSAGE_HEADROOM_BYTES,
  maxMessageBytesFor,
  SERVER_OPTIONS,
} from './options.js';
export {
  AUTHORIZATION_METADATA_KEY,
  acceptToken,
  checkToken,
  createTokenInterceptor,
  isLoopbackHost,
  isWildcardHost,
  RECOMMENDED_TOKEN_LENGTH,
  readTokenFile,
  splitHostPort,
  TOKEN_ENV,
  TOKEN_FILE_ENV,
  TOKEN_FILE_FORM,
  TOKEN_METADATA_KEY,
  tokenFromMetadata,
} from './security.js';
export {
  CoordinatorClient,
  CoordinatorServiceDefinition,
  encodeTrainRequest,
  encodeTrainResponse,
  encodeTrainResponseOnce,
} from './service.js';
export {
  CODE_FOR_GRPC_STATUS,
  ERROR_CODE_METADATA_KEY,
  fromGrpcStatus,
  GRPC_STATUS_FOR_CODE,
  grpcStatusName,
  type ReceivedStatusContext,
  toGrpcStatus,
} from './status.js';
export { mapIterable, writeMessages } from './streams.js';
export {
  type CertificateFile,
  chainsTo,
  isSelfSigned,
  type PrivateKeyFile,
  readCertificateFile,
  readPrivateKeyFile,
  readTlsFiles,
  type TlsFiles,
  type TlsFlagNames,
  type TlsPaths,
} from './tlsFiles.js';
export {
  checkProtocolVersion,
  type PeerDescription,
  PROTOCOL_VERSION,
  protocolVersionError,
} from './version.js';
