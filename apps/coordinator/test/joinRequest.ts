import { DataType, JoinRequest, PROTOCOL_VERSION } from '@shardline/protocol';

/** A Join as a hand-written client sends it: this protocol version, float32 only, `over` on top. */
export function joinRequest(over: Partial<JoinRequest> = {}): JoinRequest {
  return JoinRequest.fromPartial({
    protocolVersion: PROTOCOL_VERSION,
    workerName: 'rogue',
    backend: 'none',
    hostname: 'test',
    pid: process.pid,
    supportedDtypes: [DataType.FLOAT32],
    ...over,
  });
}
