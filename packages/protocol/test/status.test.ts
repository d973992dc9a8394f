import { readFileSync } from 'node:fs';
import { Metadata, status } from '@grpc/grpc-js';
import { ShardlineError, ShardlineErrorCodes } from '@shardline/core/errors';
import { describe, expect, it } from 'vitest';
import {
  CHANNEL_OPTIONS,
  checkProtocolVersion,
  ERROR_CODE_METADATA_KEY,
  fromGrpcStatus,
  MAX_CHUNK_BYTES,
  maxMessageBytesFor,
  PROTOCOL_VERSION,
  protocolVersionError,
  SERVER_OPTIONS,
  toGrpcStatus,
} from '../src/index.js';

describe('toGrpcStatus / fromGrpcStatus', () => {
  it('maps Shardline codes to fitting gRPC codes', () => {
    expect(toGrpcStatus(new ShardlineError('DATA_CORRUPT', 'x')).code).toBe(status.DATA_LOSS);
    expect(toGrpcStatus(new ShardlineError('MISMATCH', 'x')).code).toBe(status.FAILED_PRECONDITION);
    expect(toGrpcStatus(new ShardlineError('INVALID_ARGUMENT', 'x')).code).toBe(
      status.INVALID_ARGUMENT,
    );
    expect(toGrpcStatus(new ShardlineError('TIMEOUT', 'x')).code).toBe(status.DEADLINE_EXCEEDED);
    expect(toGrpcStatus(new Error('boom')).code).toBe(status.INTERNAL);
    expect(toGrpcStatus(Object.assign(new Error('no file'), { code: 'ENOENT' })).code).toBe(
      status.NOT_FOUND,
    );
  });

  it('keeps the code of errors that already carry a gRPC status', () => {
    const handMade = Object.assign(new Error('Unknown worker id w-9: call Join first.'), {
      code: status.FAILED_PRECONDITION,
    });
    const sent = toGrpcStatus(handMade);
    expect(sent.code).toBe(status.FAILED_PRECONDITION);
    expect(sent.details).toBe('Unknown worker id w-9: call Join first.');
    const downstream = {
      code: status.UNAVAILABLE,
      details: 'upstream gone',
      metadata: new Metadata(),
    };
    expect(toGrpcStatus(downstream)).toMatchObject({
      code: status.UNAVAILABLE,
      details: 'upstream gone',
    });
  });

  it('round-trips every Shardline code and message exactly through the trailer', () => {
    for (const code of ShardlineErrorCodes) {
      const sent = toGrpcStatus(new ShardlineError(code, `message for ${code}`));
      expect(sent).toBeInstanceOf(Error);
      expect(sent.metadata.get(ERROR_CODE_METADATA_KEY)).toEqual([code]);
      const received = fromGrpcStatus({
        code: sent.code,
        details: sent.details,
        metadata: sent.metadata,
      });
      expect(received.code).toBe(code);
      expect(received.message).toBe(`message for ${code}`);
      expect(received.details).toMatchObject({ grpcCode: sent.code });
    }
  });

  it('maps statuses from gRPC itself by code, with a hint on what to do', () => {
    const unavailable = fromGrpcStatus({
      code: status.UNAVAILABLE,
      details: 'No connection established',
      metadata: new Metadata(),
    });
    expect(unavailable.code).toBe('NETWORK');
    expect(unavailable.message).toContain(
      'gRPC call failed with UNAVAILABLE: No connection established',
    );
    expect(unavailable.message).toContain('Check that the coordinator is running');
    expect(
      fromGrpcStatus({ code: status.RESOURCE_EXHAUSTED, details: 'too big' }).message,
    ).toContain('lower the chunk size');
    expect(fromGrpcStatus({ code: status.DATA_LOSS }).code).toBe('DATA_CORRUPT');
    // An unknown code in the trailer is ignored, not trusted.
    const forged = new Metadata();
    forged.set(ERROR_CODE_METADATA_KEY, 'NOT_A_CODE');
    expect(fromGrpcStatus({ code: status.UNIMPLEMENTED, metadata: forged }).code).toBe('MISMATCH');
  });

  it('reads UNAVAILABLE, and CANCELLED this side did not ask for, on a stream as a lost connection', () => {
    const dropped = { code: status.UNAVAILABLE, details: 'Connection dropped' };
    const lost = fromGrpcStatus(dropped, { stream: { cancelledHere: false } });
    expect(lost.code).toBe('CONNECTION_LOST');
    expect(lost.message).toContain('UNAVAILABLE: Connection dropped');
    const cancelled = { code: status.CANCELLED, details: 'Call cancelled' };
    expect(fromGrpcStatus(cancelled, { stream: { cancelledHere: false } }).code).toBe(
      'CONNECTION_LOST',
    );
    // Cancelled by this side: a cancellation, not a broken connection.
    expect(fromGrpcStatus(cancelled, { stream: { cancelledHere: true } }).code).toBe('CANCELLED');
    // Outside a stream (a unary call that never connected) UNAVAILABLE stays NETWORK.
    expect(fromGrpcStatus(dropped).code).toBe('NETWORK');
    // A Shardline peer's own code wins over the context.
    const sent = toGrpcStatus(new ShardlineError('NETWORK', 'download failed'));
    expect(fromGrpcStatus(sent, { stream: { cancelledHere: false } }).code).toBe('NETWORK');
    // The connection-lost code travels as UNAVAILABLE to other gRPC clients.
    expect(toGrpcStatus(new ShardlineError('CONNECTION_LOST', 'gone')).code).toBe(
      status.UNAVAILABLE,
    );
  });
});

describe('protocol version check', () => {
  it('exports the number the proto files declare, so the two cannot drift apart', () => {
    for (const file of ['tensor.proto', 'coordinator.proto']) {
      const proto = readFileSync(
        new URL(`../../../proto/shardline/v1/${file}`, import.meta.url),
        'utf8',
      );
      expect(proto.match(/PROTOCOL_VERSION = (\d+)/)?.[1], file).toBe(String(PROTOCOL_VERSION));
    }
    expect(PROTOCOL_VERSION).toBe(3);
  });

  it('accepts its own version and refuses others, naming both versions', () => {
    expect(protocolVersionError(PROTOCOL_VERSION)).toBeUndefined();
    expect(() => checkProtocolVersion(PROTOCOL_VERSION)).not.toThrow();
    // A version-1 worker (JSON hyperparameters and evaluation state) is refused.
    const older = protocolVersionError(1, { role: 'worker', name: 'gpu-box-2' });
    expect(older?.code).toBe('MISMATCH');
    expect(older?.message).toBe(
      'Shardline protocol version mismatch: this process speaks version 3, the worker gpu-box-2 ' +
        'speaks version 1. Upgrade the worker gpu-box-2 to the same Shardline release as this process.',
    );
    const newer = protocolVersionError(4, { role: 'worker', name: 'gpu-box-2' });
    expect(newer?.code).toBe('MISMATCH');
    expect(newer?.message).toBe(
      'Shardline protocol version mismatch: this process speaks version 3, the worker gpu-box-2 ' +
        'speaks version 4. Upgrade this process to the same Shardline release as the other side.',
    );
    expect(protocolVersionError(1, { role: 'coordinator' }, 4)?.message).toContain(
      'Upgrade the coordinator to the same Shardline release',
    );
    expect(() => checkProtocolVersion(0, { role: 'worker' })).toThrowError(
      /sent no protocol version \(0\)/,
    );
    // At the server edge the refusal becomes FAILED_PRECONDITION.
    expect(toGrpcStatus(newer).code).toBe(status.FAILED_PRECONDITION);
  });
});

describe('option presets', () => {
  it('let the largest chunk through with headroom, and tune keepalive and flow control', () => {
    for (const options of [CHANNEL_OPTIONS, SERVER_OPTIONS]) {
      expect(options['grpc.max_receive_message_length']).toBe(maxMessageBytesFor(MAX_CHUNK_BYTES));
      expect(options['grpc.max_receive_message_length']).toBeGreaterThan(MAX_CHUNK_BYTES);
      expect(options['grpc.keepalive_time_ms']).toBeGreaterThan(0);
    }
    expect(CHANNEL_OPTIONS['grpc-node.flow_control_window']).toBeGreaterThan(65_535);
  });
});
