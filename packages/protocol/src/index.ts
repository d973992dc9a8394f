/**
 * @shardline/protocol: Shardline's gRPC wire contract. The messages and the CoordinatorService
 * definition are generated from proto/shardline/v1 by ts-proto (src/gen, committed); beside
 * them, the hand-written parts every peer needs: the protocol version check, tensor codecs
 * (float32, float16, bfloat16), chunked transfer with checksums, ShardlineError <-> gRPC status
 * conversion, channel/server option presets, and channel security (the token's metadata and
 * interceptor, TLS PEM files checked at startup).
 */

export * from './chunking.js';
export * from './codecs.js';
export * from './crc32.js';
export * from './gen/index.shardline.v1.js';
export * from './messages.js';
export * from './options.js';
export * from './security.js';
export * from './service.js';
export * from './status.js';
export * from './streams.js';
export * from './tlsFiles.js';
export * from './version.js';
