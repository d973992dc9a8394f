/**
 * The wire protocol version and the handshake check built on it.
 */
import { ShardlineError } from '@shardline/core/errors';

/**
 * The version of the Shardline wire protocol this package speaks, sent in
 * `JoinRequest.protocol_version` and `JoinResponse.protocol_version`. It matches the
 * `PROTOCOL_VERSION = 3` comment in proto/shardline/v1/tensor.proto; change both together, and
 * only when an older peer would misread the new messages (see that comment). Version 2 sends
 * hyperparameters and evaluation counts as typed messages instead of JSON strings; version 3
 * ships the model's topology, plugins and image-folder dataset in the job, so older peers (which
 * build the model from its registry name) are refused.
 */
export const PROTOCOL_VERSION = 3;

/** Who the other side of a version check is, for the refusal message. */
export interface PeerDescription {
  /** Its role: "worker" or "coordinator". */
  role: string;
  /** A name, host or address that identifies it in logs ("gpu-box-2 (node-7:4242)"). */
  name?: string;
}

/**
 * The refusal for a peer speaking another protocol version, or undefined when the versions match.
 * The message names both versions and what to do; the code is `MISMATCH`, which the server edge
 * turns into gRPC FAILED_PRECONDITION.
 *
 * @example
 * ```ts
 * const refusal = protocolVersionError(request.protocolVersion, { role: 'worker', name: request.workerName });
 * if (refusal) return callback(toGrpcStatus(refusal));
 * ```
 */
export function protocolVersionError(
  peerVersion: number,
  peer: PeerDescription = { role: 'peer' },
  ownVersion: number = PROTOCOL_VERSION,
): ShardlineError | undefined {
  if (peerVersion === ownVersion) return undefined;
  const who = peer.name ? `the ${peer.role} ${peer.name}` : `the ${peer.role}`;
  const found =
    peerVersion === 0
      ? `${who} sent no protocol version (0): it predates versioning or is not a Shardline process`
      : `${who} speaks version ${peerVersion}`;
  const advice =
    peerVersion > ownVersion
      ? 'Upgrade this process to the same Shardline release as the other side.'
      : `Upgrade ${who} to the same Shardline release as this process.`;
  return new ShardlineError(
    'MISMATCH',
    `Shardline protocol version mismatch: this process speaks version ${ownVersion}, ${found}. ` +
      `${peerVersion === 0 ? 'Run the same Shardline release on the coordinator and every worker.' : advice}`,
    { details: { ownVersion, peerVersion, peerRole: peer.role, peerName: peer.name } },
  );
}

/** Throws {@link protocolVersionError}'s refusal unless `peerVersion` equals ours. */
export function checkProtocolVersion(
  peerVersion: number,
  peer: PeerDescription = { role: 'peer' },
  ownVersion: number = PROTOCOL_VERSION,
): void {
  const error = protocolVersionError(peerVersion, peer, ownVersion);
  if (error) throw error;
}
