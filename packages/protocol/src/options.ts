/**
 * grpc-js option presets for Shardline's channels (workers) and servers (the coordinator).
 * Pass them as they are, or spread them and override: `new Server({ ...SERVER_OPTIONS })`.
 */
import type { Http2Server, Http2Session } from 'node:http2';
import type { ChannelOptions, Server } from '@grpc/grpc-js';
import { MAX_CHUNK_BYTES } from './chunking.js';

/**
 * Room for everything in a message besides the chunk's data: TensorMeta, the wrappers, field
 * tags. Those take well under a kilobyte; 64 KiB also leaves room for the other messages, the
 * largest of which (JoinResponse, GetStatusResponse) carry a few kilobytes of JSON and names.
 */
export const MESSAGE_HEADROOM_BYTES = 64 * 1024;

/** The message size limit that lets chunks of `maxChunkBytes` through, with headroom. */
export function maxMessageBytesFor(maxChunkBytes: number = MAX_CHUNK_BYTES): number {
  return maxChunkBytes + MESSAGE_HEADROOM_BYTES;
}

/**
 * The HTTP/2 flow-control window a client advertises, per stream and for the connection.
 * HTTP/2 starts every stream with a 64 KiB window, so the sender stops after each 64 KiB until
 * the receiver's WINDOW_UPDATE arrives: one round trip, plus event-loop latency, per 64 KiB.
 * 16 MiB keeps several chunks in flight and a whole 5.6 MB tensor off that treadmill. Memory
 * cost: at most this much buffered per connection, and only while data is unread.
 *
 * grpc-js applies it on channels only (`grpc-node.flow_control_window`); a grpc-js 1.14 server
 * keeps Node's 64 KiB receive window (grpc/grpc-node#3058 adds the option there), so uploads to
 * the coordinator stay window-bound unless {@link applyServerFlowControlWindow} raises it.
 * bench/transfer.bench.mjs measures the effect: about twice the throughput both ways.
 */
export const FLOW_CONTROL_WINDOW_BYTES = 16 * 1024 * 1024;

/**
 * Keepalive timing, shared by both sides. Pings find a peer that vanished without closing its
 * connection (machine lost, cable pulled, NAT entry expired): without them a worker would wait
 * for its next assignment forever. 30 s between pings costs nothing; the 20 s timeout is long
 * because a busy Node process answers pings only between event-loop turns, and a worker inside
 * a long synchronous TensorFlow.js step must not be mistaken for a dead one.
 */
export const KEEPALIVE_TIME_MS = 30_000;
/** How long a keepalive ping may go unanswered before the connection is closed. */
export const KEEPALIVE_TIMEOUT_MS = 20_000;

/**
 * Options for a worker's channel to the coordinator.
 *
 * @example
 * ```ts
 * const client = new CoordinatorServiceClient('coordinator:7070', credentials.createInsecure(), CHANNEL_OPTIONS);
 * ```
 */
export const CHANNEL_OPTIONS: Readonly<ChannelOptions> = {
  // Chunks up to MAX_CHUNK_BYTES plus headers in both directions (the gRPC default receive
  // limit, 4 MiB, would refuse a 4 MiB chunk once its header is added).
  'grpc.max_send_message_length': maxMessageBytesFor(),
  'grpc.max_receive_message_length': maxMessageBytesFor(),
  'grpc.keepalive_time_ms': KEEPALIVE_TIME_MS,
  'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
  // A worker between jobs still wants to notice that its coordinator is gone.
  'grpc.keepalive_permit_without_calls': 1,
  'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW_BYTES,
  // Reconnect quickly after a coordinator restart, but do not hammer one that stays down.
  'grpc.initial_reconnect_backoff_ms': 500,
  'grpc.max_reconnect_backoff_ms': 10_000,
};

/**
 * Options for the coordinator's server.
 *
 * @example
 * ```ts
 * const server = new Server(SERVER_OPTIONS);
 * server.addService(CoordinatorServiceService, implementation);
 * ```
 */
export const SERVER_OPTIONS: Readonly<ChannelOptions> = {
  'grpc.max_send_message_length': maxMessageBytesFor(),
  'grpc.max_receive_message_length': maxMessageBytesFor(),
  // Ignored by grpc-js 1.14 servers; honoured once grpc/grpc-node#3058 ships. Until then call
  // applyServerFlowControlWindow(server) after bindAsync.
  'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW_BYTES,
  // The server pings too, so a worker that vanished mid-step is noticed and its share reassigned
  // instead of stalling the step until TCP gives up (minutes to hours).
  'grpc.keepalive_time_ms': KEEPALIVE_TIME_MS,
  'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
};

/**
 * Raises the HTTP/2 receive window of a bound grpc-js server to `windowBytes`, for sessions that
 * connect from now on: the per-stream window it advertises, and the connection window.
 *
 * Workaround for grpc/grpc-node#3058 (grpc-js 1.14 servers ignore `grpc-node.flow_control_window`
 * and keep Node's 64 KiB window, which roughly halves gradient upload throughput on loopback; see
 * bench/transfer.bench.mjs). It reaches the server's Node HTTP/2 servers through a private
 * grpc-js field, so it checks what it finds and does nothing (returning false) when grpc-js
 * changes shape. Remove it once grpc-js honours the option on servers.
 *
 * @example
 * ```ts
 * server.bindAsync(address, ServerCredentials.createInsecure(), () => applyServerFlowControlWindow(server));
 * ```
 */
export function applyServerFlowControlWindow(
  server: Server,
  windowBytes: number = FLOW_CONTROL_WINDOW_BYTES,
): boolean {
  const http2Servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(http2Servers instanceof Map) || http2Servers.size === 0) return false;
  let applied = false;
  for (const candidate of http2Servers.keys()) {
    const http2Server = candidate as Partial<Http2Server>;
    if (typeof http2Server.updateSettings !== 'function' || typeof http2Server.on !== 'function') {
      continue;
    }
    // The per-stream window, announced in the SETTINGS frame of every new session.
    http2Server.updateSettings({ initialWindowSize: windowBytes });
    // The connection window, which SETTINGS cannot change.
    http2Server.on('session', (session: Http2Session) => {
      try {
        session.setLocalWindowSize(windowBytes);
      } catch {
        // A session that is already closing: nothing to tune.
      }
    });
    applied = true;
  }
  return applied;
}
