/**
 * Server-sent events (`/api/events`): one response per client, kept open, each event written
 * as `event: <name>`, `id: <n>`, `data: <JSON>`. A browser's EventSource reconnects by itself
 * when a stream ends, and every (re)connection starts with a full snapshot, so a client that
 * missed events only needs to reconnect.
 *
 * Memory stays bounded however slow a client is: what the socket has not taken yet is counted
 * (`writableLength`), and a client with more than `maxBufferedBytes` waiting is disconnected
 * (it reconnects and starts again from a snapshot) rather than buffered without end. A comment
 * line every `keepAliveMs` keeps proxies from closing an idle stream, and finds dead clients.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

/** One event: its name and its data (anything JSON.stringify takes). */
export interface StreamEvent {
  event: string;
  data: unknown;
}

/** Options of {@link createEventStream}. */
export interface EventStreamOptions {
  /** Most bytes waiting for one client before it is disconnected. Default 1 MiB. */
  maxBufferedBytes?: number;
  /** Milliseconds between keep-alive comments. Default 15,000. */
  keepAliveMs?: number;
  /** Milliseconds a browser waits before reconnecting (the stream's `retry:`). Default 2,000. */
  retryMs?: number;
}

/** The clients of one event stream; see the module comment. */
export interface EventStream {
  /** Serves one client: the headers, `first` (its snapshot), then every broadcast. */
  attach(request: IncomingMessage, response: ServerResponse, first: readonly StreamEvent[]): void;
  /** Sends one event to every client (encoded once). */
  broadcast(event: StreamEvent): void;
  /** Clients connected now. */
  readonly clients: number;
  /** Clients disconnected for falling behind, so far. */
  readonly dropped: number;
  /** Ends every stream after what is queued, and stops the keep-alive timer. */
  close(): void;
}

/**
 * Creates an event stream.
 *
 * @example
 * ```ts
 * const stream = createEventStream();
 * stream.attach(request, response, [{ event: 'snapshot', data: run.snapshot() }]);
 * run.subscribe((delta) => stream.broadcast(delta));
 * ```
 */
export function createEventStream(options: EventStreamOptions = {}): EventStream {
  const maxBuffered = options.maxBufferedBytes ?? 1024 * 1024;
  const clients = new Set<ServerResponse>();
  let nextId = 1;
  let dropped = 0;
  let closed = false;

  const send = (response: ServerResponse, text: string) => {
    if (response.writableLength + Buffer.byteLength(text) > maxBuffered) {
      // Too far behind: drop it; EventSource reconnects and gets a fresh snapshot.
      dropped++;
      clients.delete(response);
      response.destroy();
      return;
    }
    response.write(text);
  };
  const encode = (e: StreamEvent) =>
    `event: ${e.event}\nid: ${nextId++}\ndata: ${JSON.stringify(e.data)}\n\n`;

  const keepAlive = setInterval(() => {
    for (const response of clients) send(response, ': keep-alive\n\n');
  }, options.keepAliveMs ?? 15_000);
  keepAlive.unref();

  return {
    attach(request, response, first) {
      response.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        connection: 'keep-alive',
        // nginx and similar proxies would otherwise hold events back in their buffers.
        'x-accel-buffering': 'no',
      });
      if (closed) {
        response.end();
        return;
      }
      response.write(`retry: ${options.retryMs ?? 2000}\n\n`);
      clients.add(response);
      const forget = () => clients.delete(response);
      request.on('close', forget);
      response.on('close', forget);
      for (const e of first) send(response, encode(e));
    },
    broadcast(e) {
      if (clients.size === 0) {
        nextId++;
        return;
      }
      const text = encode(e);
      for (const response of [...clients]) send(response, text);
    },
    get clients() {
      return clients.size;
    },
    get dropped() {
      return dropped;
    },
    close() {
      closed = true;
      clearInterval(keepAlive);
      for (const response of clients) response.end();
      clients.clear();
    },
  };
}
