/**
 * The one mapping between the wire's DataType and the all-reduce's RingDtype, used by the job
 * (`JobSpec.gradient_dtype` picks the ring's encoding), the sending link and the peer server.
 */
import { DataType } from '@shardline/protocol';
import type { RingDtype } from '@shardline/training';

const TO_WIRE: Readonly<Record<RingDtype, DataType>> = {
  float32: DataType.FLOAT32,
  float16: DataType.FLOAT16,
  bfloat16: DataType.BFLOAT16,
};

/** The wire's DataType of a ring encoding. */
export function wireDtypeOf(dtype: RingDtype): DataType {
  return TO_WIRE[dtype];
}

/**
 * The ring encoding of a wire DataType, or undefined for one the ring cannot carry
 * (UNSPECIFIED, or a value this release does not know).
 */
export function ringDtypeOf(dtype: DataType): RingDtype | undefined {
  switch (dtype) {
    case DataType.FLOAT32:
      return 'float32';
    case DataType.FLOAT16:
      return 'float16';
    case DataType.BFLOAT16:
      return 'bfloat16';
    default:
      return undefined;
  }
}
