/**
 * The CoordinatorService definition with faster serializers for the chunk-carrying messages.
 *
 * The generated encoders are built for small messages: @bufbuild/protobuf's BinaryWriter grows
 * one buffer by doubling, copies a `bytes` field into it, moves the payload again each time a
 * nested message's length prefix needs more than one byte, and `finish()` copies the result once
 * more, after which the generated grpc-js serializer copies it into a Buffer. A 1 MiB chunk
 * inside TrainRequest.gradient.chunk is copied about six times before grpc-js frames it. The
 * encoders here let the generated code write every small field (so fields added to the proto
 * later are never dropped) and place the chunk's data with a single copy into a buffer of the
 * exact size. The bytes on the wire are an equally valid encoding of the same message (only the
 * order of TensorChunk's fields differs, which every protobuf decoder accepts), so either side
 * may use either definition.
 */
import { makeGenericClientConstructor } from '@grpc/grpc-js';
import {
  type CoordinatorServiceClient,
  CoordinatorServiceService,
  GradientChunk,
  TrainRequest,
  TrainResponse,
  WeightsChunk,
} from './gen/shardline/v1/coordinator.js';
import { TensorChunk } from './gen/shardline/v1/tensor.js';

// Field numbers on the path from a Train message down to TensorChunk.data. Changing any of them
// would break the wire format (and buf breaking); test/service.test.ts checks them against the
// generated code.
const TRAIN_REQUEST_GRADIENT = 2;
const GRADIENT_CHUNK_CHUNK = 2;
const TRAIN_RESPONSE_WEIGHTS = 2;
const WEIGHTS_CHUNK_CHUNK = 1;
const TENSOR_CHUNK_DATA = 7;

const EMPTY = Buffer.alloc(0);

/** A message as a list of byte pieces, concatenated once at the end. */
interface Pieces {
  parts: Uint8Array[];
  length: number;
}

/** The tag and length prefix of a length-delimited field. */
function lengthPrefix(field: number, length: number): Uint8Array {
  const out: number[] = [];
  for (let v = ((field << 3) | 2) >>> 0; ; v >>>= 7) {
    if (v < 0x80) {
      out.push(v);
      break;
    }
    out.push((v & 0x7f) | 0x80);
  }
  for (let v = length; ; v = Math.floor(v / 128)) {
    if (v < 0x80) {
      out.push(v);
      break;
    }
    out.push((v % 128) | 0x80);
  }
  return Uint8Array.from(out);
}

/** `others` (the message's other fields, already encoded), then field `field` holding `inner`. */
function wrap(others: Uint8Array, field: number, inner: Pieces): Pieces {
  const prefix = lengthPrefix(field, inner.length);
  return {
    parts: [others, prefix, ...inner.parts],
    length: others.length + prefix.length + inner.length,
  };
}

function tensorChunkPieces(chunk: TensorChunk): Pieces {
  const others = TensorChunk.encode({ ...chunk, data: EMPTY }).finish();
  // proto3 leaves empty bytes out, as the generated encoder does.
  if (chunk.data.byteLength === 0) return { parts: [others], length: others.byteLength };
  return wrap(others, TENSOR_CHUNK_DATA, { parts: [chunk.data], length: chunk.data.byteLength });
}

function concat({ parts, length }: Pieces): Buffer {
  const out = Buffer.allocUnsafe(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.byteLength;
  }
  return out;
}

function generated<T>(fns: { encode(message: T): { finish(): Uint8Array } }, message: T): Buffer {
  const bytes = fns.encode(message).finish();
  // A view, not Buffer.from(bytes)'s copy: finish() already returned fresh memory.
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Encodes a TrainRequest as the generated `TrainRequest.encode` would, with a gradient chunk's
 * data copied once instead of about six times.
 */
export function encodeTrainRequest(message: TrainRequest): Buffer {
  const kind = message.kind;
  if (kind?.$case !== 'gradient' || kind.value.chunk === undefined) {
    return generated(TrainRequest, message);
  }
  const gradient = wrap(
    GradientChunk.encode({ ...kind.value, chunk: undefined }).finish(),
    GRADIENT_CHUNK_CHUNK,
    tensorChunkPieces(kind.value.chunk),
  );
  const others = TrainRequest.encode({ ...message, kind: undefined }).finish();
  return concat(wrap(others, TRAIN_REQUEST_GRADIENT, gradient));
}

/** Where {@link encodeTrainResponseOnce} keeps a message's encoding. */
const ENCODED = Symbol('shardline.encodedTrainResponse');

/** Encodes a TrainResponse, with a weights chunk's data copied once; see {@link encodeTrainRequest}. */
export function encodeTrainResponse(message: TrainResponse): Buffer {
  const encoded = (message as { [ENCODED]?: Buffer })[ENCODED];
  if (encoded !== undefined) return encoded;
  const kind = message.kind;
  if (kind?.$case !== 'weights' || kind.value.chunk === undefined) {
    return generated(TrainResponse, message);
  }
  const weights = wrap(
    WeightsChunk.encode({ ...kind.value, chunk: undefined }).finish(),
    WEIGHTS_CHUNK_CHUNK,
    tensorChunkPieces(kind.value.chunk),
  );
  const others = TrainResponse.encode({ ...message, kind: undefined }).finish();
  return concat(wrap(others, TRAIN_RESPONSE_WEIGHTS, weights));
}

/**
 * Encodes a TrainResponse now and returns an equal message that carries its encoding, for a
 * message written to many streams: the coordinator sends the same weights chunks to every
 * worker, and {@link CoordinatorServiceDefinition}'s serializer then hands grpc-js the stored
 * bytes instead of encoding (allocating and copying a megabyte) once per worker. A weights
 * chunk's `data` in the returned message is a view of the encoding itself, so the message holds
 * no reference to the memory it was made from: the caller may overwrite that at once (the master
 * weights at the next optimizer step). Treat the returned message as read-only; a changed copy
 * would still be sent as the original. Peers with the generated definition ignore the stored
 * encoding and encode the message as usual.
 *
 * @example
 * ```ts
 * const messages = [...weightsMessages(meta, encodeTensor(weights))].map(encodeTrainResponseOnce);
 * for (const call of workers) await writeMessages(call, messages);
 * ```
 */
export function encodeTrainResponseOnce(message: TrainResponse): TrainResponse {
  const bytes = encodeTrainResponse(message);
  const kind = message.kind;
  if (kind?.$case !== 'weights' || kind.value.chunk === undefined) {
    return Object.freeze({ ...message, [ENCODED]: bytes });
  }
  const { chunk } = kind.value;
  // encodeTrainResponse places the chunk's data last (see wrap), so it is the encoding's tail.
  const data = bytes.subarray(bytes.byteLength - chunk.data.byteLength);
  return Object.freeze({
    ...message,
    kind: { ...kind, value: { ...kind.value, chunk: { ...chunk, data } } },
    [ENCODED]: bytes,
  });
}

/**
 * The generated CoordinatorServiceService with {@link encodeTrainRequest} and
 * {@link encodeTrainResponse} as the Train serializers. Use it wherever the generated definition
 * goes: `server.addService(CoordinatorServiceDefinition, implementation)`. Peers using the
 * generated definition interoperate with it.
 */
export const CoordinatorServiceDefinition: typeof CoordinatorServiceService = {
  ...CoordinatorServiceService,
  train: {
    ...CoordinatorServiceService.train,
    requestSerialize: encodeTrainRequest,
    responseSerialize: encodeTrainResponse,
  },
};

/**
 * A client class for {@link CoordinatorServiceDefinition}: the generated CoordinatorServiceClient
 * with the faster Train serializers.
 *
 * @example
 * ```ts
 * const client = new CoordinatorClient('coordinator:7070', credentials.createInsecure(), CHANNEL_OPTIONS);
 * ```
 */
export const CoordinatorClient = makeGenericClientConstructor(
  CoordinatorServiceDefinition,
  'shardline.v1.CoordinatorService',
) as unknown as typeof CoordinatorServiceClient;
