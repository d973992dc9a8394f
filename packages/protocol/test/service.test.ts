import { describe, expect, it } from 'vitest';
import {
  CoordinatorServiceDefinition,
  CoordinatorServiceService,
  chunkTensor,
  crc32,
  DataType,
  encodeTensor,
  encodeTrainRequest,
  encodeTrainResponse,
  encodeTrainResponseOnce,
  StopReason,
  type TensorChunk,
  TrainRequest,
  TrainResponse,
} from '../src/index.js';

const values = Float32Array.from({ length: 100_000 }, (_, i) => Math.cos(i));

/** A decoded message with bytes replaced by their CRC: deep equality on megabytes is slow. */
function comparable(value: unknown): unknown {
  if (value instanceof Uint8Array) return `crc32 ${crc32(value)}, ${value.byteLength} bytes`;
  if (Array.isArray(value)) return value.map(comparable);
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, comparable(v)]));
  }
  return value;
}

const chunks: TensorChunk[] = [
  ...chunkTensor(
    {
      dtype: DataType.FLOAT32,
      shape: [values.length],
      elementCount: values.length,
      layoutFingerprint: '0123456789abcdef',
      version: 3n,
      step: 2n ** 40n,
    },
    encodeTensor(values),
    256 * 1024,
  ),
];

const requests: TrainRequest[] = [
  { kind: { $case: 'attach', value: { workerId: 'w-1', weightsVersion: 0n } } },
  { kind: { $case: 'heartbeat', value: { step: 5n, unixTimeMs: 1_700_000_000_000n } } },
  {
    kind: {
      $case: 'gradient',
      value: {
        result: { sampleCount: 64, loss: 0.25, correct: 50, computeSeconds: 1.5 },
        chunk: chunks[0],
      },
    },
  },
  { kind: { $case: 'gradient', value: { result: undefined, chunk: chunks.at(-1) } } },
  {
    kind: {
      $case: 'gradient',
      value: { result: undefined, chunk: { ...chunks[1]!, data: Buffer.alloc(0) } },
    },
  },
  { kind: undefined },
];
const responses: TrainResponse[] = [
  { kind: { $case: 'weights', value: { chunk: chunks[0] } } },
  { kind: { $case: 'weights', value: { chunk: chunks[1] } } },
  {
    kind: {
      $case: 'stop',
      value: { reason: StopReason.EVICTED, message: 'too slow', rejoinAllowed: true },
    },
  },
];

describe('one-copy Train serializers', () => {
  it('encode every TrainRequest to bytes the generated decoder reads back as the same message', () => {
    for (const message of requests) {
      const fast = encodeTrainRequest(message);
      expect(comparable(TrainRequest.decode(fast))).toEqual(
        comparable(TrainRequest.decode(TrainRequest.encode(message).finish())),
      );
      // Same fields, same sizes: only TensorChunk's field order may differ.
      expect(fast.byteLength).toBe(TrainRequest.encode(message).finish().byteLength);
    }
  });

  it('encode every TrainResponse likewise', () => {
    for (const message of responses) {
      const fast = encodeTrainResponse(message);
      expect(comparable(TrainResponse.decode(fast))).toEqual(
        comparable(TrainResponse.decode(TrainResponse.encode(message).finish())),
      );
      expect(fast.byteLength).toBe(TrainResponse.encode(message).finish().byteLength);
    }
  });

  it('replace only the Train serializers of the generated definition', () => {
    expect(CoordinatorServiceDefinition.train.path).toBe(CoordinatorServiceService.train.path);
    expect(CoordinatorServiceDefinition.train.requestDeserialize).toBe(
      CoordinatorServiceService.train.requestDeserialize,
    );
    expect(CoordinatorServiceDefinition.join).toBe(CoordinatorServiceService.join);
  });
});

describe('encodeTrainResponseOnce', () => {
  it('returns an equal message whose serialization is the stored encoding, every time', () => {
    for (const message of responses) {
      const once = encodeTrainResponseOnce(message);
      expect(comparable(once)).toEqual(comparable(message));
      const first = CoordinatorServiceDefinition.train.responseSerialize(once);
      // The same bytes object for every stream: nothing is encoded again.
      expect(CoordinatorServiceDefinition.train.responseSerialize(once)).toBe(first);
      expect(Buffer.compare(first, encodeTrainResponse(message))).toBe(0);
      // The generated encoder, which knows nothing of the stored encoding, agrees.
      expect(comparable(TrainResponse.decode(first))).toEqual(
        comparable(TrainResponse.decode(TrainResponse.encode(once).finish())),
      );
    }
  });

  it('keeps nothing of the memory it was made from: the source may be overwritten at once', () => {
    const source = new Float32Array(values);
    const [chunk] = chunkTensor(
      {
        dtype: DataType.FLOAT32,
        shape: [source.length],
        elementCount: source.length,
        layoutFingerprint: '0123456789abcdef',
        version: 1n,
        step: 1n,
      },
      encodeTensor(source),
      256 * 1024,
    );
    const message: TrainResponse = { kind: { $case: 'weights', value: { chunk } } };
    const once = encodeTrainResponseOnce(message);
    const before = Buffer.from(CoordinatorServiceDefinition.train.responseSerialize(once));
    source.fill(Number.NaN); // the next optimizer step, overwriting the master weights in place
    const after = CoordinatorServiceDefinition.train.responseSerialize(once);
    expect(Buffer.compare(after, before)).toBe(0);
    const decoded = TrainResponse.decode(after);
    const data = decoded.kind?.$case === 'weights' ? decoded.kind.value.chunk?.data : undefined;
    expect(data && crc32(data)).toBe(crc32(encodeTensor(values).subarray(0, 256 * 1024)));
    // The message's own chunk data is a view of the encoding, not of the overwritten source.
    const own = once.kind?.$case === 'weights' ? once.kind.value.chunk?.data : undefined;
    expect(own && crc32(own)).toBe(crc32(encodeTensor(values).subarray(0, 256 * 1024)));
  });
});
