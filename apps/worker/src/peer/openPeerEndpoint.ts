/**
 * Whether a worker serves a peer endpoint for ring mode, and how: the decision runWorker makes
 * once, before joining, from `--peer-listen`/`--peer-advertise`/`--no-peer` and the channel's
 * security. A worker without one still trains in star mode, so a peer endpoint that cannot be
 * served is a warning when the settings were automatic; addresses asked for explicitly must
 * work, so they fail the start instead.
 */
import { type Logger, toShardlineError } from '@shardline/core';
import { isLoopbackHost, splitHostPort } from '@shardline/protocol';
import { peerTlsGap, type WorkerChannel } from '../security.js';
import { type PeerEndpoint, type PeerEndpointSettings, startPeerEndpoint } from './peerEndpoint.js';

/** Options of {@link openPeerEndpoint}. */
export interface OpenPeerEndpointOptions {
  /** The worker's peer settings; `false` serves none (`--no-peer`, `--peer-listen off`). */
  peer: PeerEndpointSettings | false | undefined;
  /** The coordinator's `host:port`, whose route picks the default address. */
  coordinator: string;
  channel: WorkerChannel;
  logger: Logger;
}

/**
 * The worker's peer endpoint, or why it has none: `why` completes "this worker serves no peer
 * endpoint: ..." and says what to change, for the refusal of a ring-mode job.
 */
export type PeerEndpointChoice =
  | { endpoint: PeerEndpoint; why?: undefined }
  | { endpoint: undefined; why: string };

/**
 * Starts the peer endpoint unless it is switched off or the channel's security rules it out
 * (see {@link peerTlsGap}): with mutual TLS when the channel has what peer TLS needs, in
 * plaintext when the channel is plaintext. Throws only for explicitly given addresses that
 * cannot be served (or a certificate that does not fit them).
 *
 * @example
 * ```ts
 * const { endpoint, why } = await openPeerEndpoint({ peer: {}, coordinator, channel, logger });
 * join({ ..., peerAddress: endpoint?.advertised ?? '' });
 * ```
 */
export async function openPeerEndpoint(
  options: OpenPeerEndpointOptions,
): Promise<PeerEndpointChoice> {
  const { channel, logger } = options;
  if (options.peer === false) {
    return {
      endpoint: undefined,
      why: 'it was started with --no-peer or --peer-listen off. Start it without them',
    };
  }
  const settings = options.peer ?? {};
  const automatic =
    (settings.listen === undefined || settings.listen === 'auto') &&
    settings.advertise === undefined;
  const gap = peerTlsGap(channel);
  if (gap !== undefined) {
    // Asked-for addresses that cannot be served deserve a warning; the default is only news.
    logger[automatic ? 'info' : 'warn'](
      `no peer endpoint, so this worker joins without ring mode (the coordinator then trains in star mode, or refuses it from a ring job): ${gap}`,
    );
    return { endpoint: undefined, why: gap };
  }
  let endpoint: PeerEndpoint;
  try {
    endpoint = await startPeerEndpoint({
      settings,
      coordinator: options.coordinator,
      ...(channel.tokenValue === undefined ? {} : { token: channel.tokenValue }),
      ...(channel.peerTls === undefined ? {} : { tls: channel.peerTls }),
      logger,
    });
  } catch (error) {
    // Addresses that were asked for must work; the automatic choice must not stop a worker that
    // can still train in star mode.
    if (!automatic) throw error;
    const reason = toShardlineError(error).message;
    logger.warn('no peer endpoint: this worker joins without ring mode', { reason });
    return { endpoint: undefined, why: reason };
  }
  logger.info('peer endpoint listening', {
    listen: endpoint.server.address,
    advertised: endpoint.advertised,
    tls: channel.peerTls !== undefined,
  });
  // Under mutual TLS only holders of a certificate from --tls-ca get through, as with the
  // coordinator; without TLS or a token, anyone who reaches the port does.
  if (
    channel.tokenValue === undefined &&
    channel.peerTls === undefined &&
    !isLoopbackHost(splitHostPort(endpoint.server.address).host)
  ) {
    logger.warn(
      `the peer endpoint at ${endpoint.server.address} takes ring streams from anyone who can reach it: give every worker and the coordinator a token (--token) to require it`,
    );
  }
  return { endpoint };
}
