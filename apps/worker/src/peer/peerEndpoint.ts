/**
 * Where a worker's peer endpoint (ring mode) listens and what it tells the others to dial.
 *
 * The default has to work without configuration on a LAN: other workers must reach this one at
 * the address it advertises, and the one address known to be routable between the machines is
 * the one this worker uses to reach the coordinator. So, for a coordinator on loopback the
 * endpoint listens on 127.0.0.1 (every worker is on this machine); otherwise it asks the kernel
 * which local address its route to the coordinator leaves from (a `connect()`ed UDP socket: no
 * packet is sent), listens on every interface and advertises that address. `--peer-listen` and
 * `--peer-advertise` override either half for NAT and containers, where the address others dial
 * is not one this machine has.
 *
 * Under mutual TLS (peerTls.ts) the advertised host is also what the other members check this
 * worker's certificate against, so the certificate is checked against it before the endpoint
 * starts: a mismatch found here names the host and the fix, while one found at the first ring
 * step would only fail that step on another machine.
 */
import { createSocket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { ServerCredentials } from '@grpc/grpc-js';
import { type Logger, ShardlineError } from '@shardline/core';
import {
  isLoopbackHost,
  isWildcardHost,
  MAX_CHUNK_BYTES,
  splitHostPort,
} from '@shardline/protocol';
import { type PeerServer, startPeerServer } from './peerServer.js';
import { checkPeerCertificate, type PeerTls, peerServerCredentials } from './peerTls.js';

/** What the worker's settings say about its peer endpoint (`--peer-listen`, `--peer-advertise`). */
export interface PeerEndpointSettings {
  /**
   * `host:port` to listen on (port 0: any free port), or `auto` (the default): port 0 on the
   * address the worker reaches the coordinator from. `off` serves none.
   */
  listen?: string;
  /** `host:port` other workers dial; default: the listen address (or the route's local address
   * when listening on a wildcard) with the bound port. */
  advertise?: string;
}

/** Where to listen, and the host to advertise when no `advertise` address was given. */
export interface PeerEndpointPlan {
  /** `host:port` for the server to bind. */
  listen: string;
  /** The host part of the advertised address; the bound port is added after binding. */
  advertiseHost: string;
}

/** A running peer endpoint and the address that goes into JoinRequest.peer_address. */
export interface PeerEndpoint {
  readonly server: PeerServer;
  /** `host:port` other members dial. */
  readonly advertised: string;
  /** Closes the server (fails every ring on it). Idempotent. */
  close(): Promise<void>;
}

/** Finds the local address a route to `host:port` leaves from; see the module comment. */
export type RouteProbe = (host: string, port: number) => Promise<string>;

/** How long the route probe may take (a DNS lookup of the coordinator's name included). */
const ROUTE_PROBE_TIMEOUT_MS = 5_000;

/**
 * The local address of this machine's route to `host:port`: a UDP socket `connect()` (which
 * resolves the name and picks the route, sending nothing) and its `address()`.
 *
 * @example
 * ```ts
 * await localAddressTowards('10.0.0.5', 7070); // '10.0.0.17'
 * ```
 */
export async function localAddressTowards(host: string, port: number): Promise<string> {
  const families: Array<'udp4' | 'udp6'> = isIPv6(host) ? ['udp6'] : ['udp4', 'udp6'];
  let lastError: unknown;
  for (const family of families) {
    try {
      return await probe(family, host, port);
    } catch (error) {
      // A name with only IPv6 addresses fails the udp4 lookup; try udp6 before giving up.
      lastError = error;
    }
  }
  throw new ShardlineError(
    'NETWORK',
    `Cannot tell which local address reaches the coordinator at ${formatHostPort(host, port)} (${(lastError as Error)?.message ?? String(lastError)}), so the peer endpoint has no address to advertise. ` +
      'Set --peer-listen <address>:0 (and --peer-advertise <host:port> behind NAT), or --no-peer to join without ring mode.',
    { cause: lastError },
  );
}

function probe(family: 'udp4' | 'udp6', host: string, port: number): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const socket = createSocket(family);
    const finish = (error: Error | undefined, address?: string) => {
      clearTimeout(timer);
      socket.close();
      if (error) reject(error);
      else resolve(address!);
    };
    const timer = setTimeout(
      () => finish(new Error(`no route found within ${ROUTE_PROBE_TIMEOUT_MS} ms`)),
      ROUTE_PROBE_TIMEOUT_MS,
    );
    socket.once('error', (error) => finish(error));
    socket.connect(port, host, () => {
      try {
        finish(undefined, socket.address().address);
      } catch (error) {
        finish(error as Error);
      }
    });
  });
}

/** `host:port`, with IPv6 hosts in brackets. */
export function formatHostPort(host: string, port: number | string): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Where to listen and what host to advertise, from the settings and the coordinator's address
 * (see the module comment). `probe` finds the route's local address; tests pass a fake.
 */
export async function planPeerEndpoint(
  settings: PeerEndpointSettings,
  coordinator: string,
  probe: RouteProbe = localAddressTowards,
): Promise<PeerEndpointPlan> {
  const listen =
    settings.listen === undefined || settings.listen === 'auto' ? undefined : settings.listen;
  if (listen !== undefined) {
    const { host } = splitHostPort(listen);
    if (!isWildcardHost(host)) return { listen, advertiseHost: host };
    // Listening everywhere: advertise the address the coordinator's route leaves from, unless
    // the advertised address was given (then the route does not matter).
    if (settings.advertise !== undefined) return { listen, advertiseHost: '' };
    return { listen, advertiseHost: await routeHost(coordinator, probe) };
  }
  const { host } = splitHostPort(coordinator);
  if (isLoopbackHost(host)) return { listen: '127.0.0.1:0', advertiseHost: '127.0.0.1' };
  const local = await routeHost(coordinator, probe);
  return {
    listen: local.includes(':') ? '[::]:0' : '0.0.0.0:0',
    advertiseHost: local,
  };
}

async function routeHost(coordinator: string, probe: RouteProbe): Promise<string> {
  const { host, port } = splitHostPort(coordinator);
  return probe(host, Number(port));
}

/** Options of {@link startPeerEndpoint}. */
export interface StartPeerEndpointOptions {
  settings: PeerEndpointSettings;
  /** The coordinator's `host:port`, whose route picks the default address. */
  coordinator: string;
  /** The job's token: every peer call must carry it. */
  token?: string;
  /**
   * Serve with mutual TLS (the worker's channel uses TLS with a certificate and `--tls-ca`);
   * plaintext when absent.
   */
  tls?: PeerTls;
  logger: Logger;
  /** Finds the route's local address (default {@link localAddressTowards}). */
  probe?: RouteProbe;
}

/**
 * Starts the worker's peer endpoint: with mutual TLS when `tls` is given (after checking that
 * the certificate lists the advertised host and allows server and client authentication;
 * INVALID_ARGUMENT otherwise), plaintext when not, the channel's token required on every call,
 * and chunks up to the protocol's largest chunk size (every job's `max_chunk_bytes` is at most
 * that; the all-reduce itself then refuses any chunk that is not exactly the size its schedule
 * expects).
 *
 * @example
 * ```ts
 * const peer = await startPeerEndpoint({ settings: {}, coordinator: '10.0.0.5:7070', token, logger });
 * join({ ..., peerAddress: peer.advertised, capabilities: ['evaluate', 'exchange.ring'] });
 * ```
 */
export async function startPeerEndpoint(options: StartPeerEndpointOptions): Promise<PeerEndpoint> {
  const plan = await planPeerEndpoint(options.settings, options.coordinator, options.probe);
  if (options.tls) {
    const advertised = options.settings.advertise;
    checkPeerCertificate(
      options.tls,
      advertised === undefined ? plan.advertiseHost : splitHostPort(advertised).host,
      Number(splitHostPort(advertised ?? plan.listen).port),
    );
  }
  const server = await startPeerServer({
    listen: plan.listen,
    credentials: options.tls
      ? peerServerCredentials(options.tls)
      : ServerCredentials.createInsecure(),
    ...(options.token === undefined ? {} : { token: options.token }),
    maxMessageBytes: MAX_CHUNK_BYTES,
    logger: options.logger,
  });
  const advertised = options.settings.advertise ?? formatHostPort(plan.advertiseHost, server.port);
  return {
    server,
    advertised,
    close: () => server.close(),
  };
}
