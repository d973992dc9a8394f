/**
 * A client of server-sent events for tests, on node:http: collects every event of one stream
 * (`/api/events`) as it comes, until the server ends it.
 */
import { get, type IncomingMessage } from 'node:http';

/** One event: its name, its id, and its data parsed as JSON. */
export interface ReceivedEvent {
  event: string;
  id?: string;
  data: Record<string, unknown>;
}

/** A stream being read. */
export interface EventReader {
  /** The response's status and headers, once they came. */
  readonly response: Promise<IncomingMessage>;
  /** Every event so far, in order. */
  readonly events: ReceivedEvent[];
  /** Comment lines so far (keep-alives). */
  readonly comments: string[];
  /** Resolves when the server ends the stream. */
  readonly ended: Promise<void>;
  /** Resolves with the first event (from now or already received) that `match` accepts. */
  next(match: (e: ReceivedEvent) => boolean): Promise<ReceivedEvent>;
  /** Stops reading. */
  close(): void;
}

/** Opens `url` as an event stream and reads it; see {@link EventReader}. */
export function readEvents(url: string, headers: Record<string, string> = {}): EventReader {
  const events: ReceivedEvent[] = [];
  const comments: string[] = [];
  const waiting: Array<{
    match: (e: ReceivedEvent) => boolean;
    resolve: (e: ReceivedEvent) => void;
  }> = [];
  let endStream: () => void = () => {};
  let failStream: (e: Error) => void = () => {};
  const ended = new Promise<void>((resolve, reject) => {
    endStream = resolve;
    failStream = reject;
  });
  // A stream cut off after its test has finished is not that test's failure.
  ended.catch(() => {});
  let buffer = '';
  const dispatch = (block: string) => {
    let event = 'message';
    let id: string | undefined;
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) comments.push(line.slice(1).trim());
      else if (line.startsWith('event: ')) event = line.slice('event: '.length);
      else if (line.startsWith('id: ')) id = line.slice('id: '.length);
      else if (line.startsWith('data: ')) data.push(line.slice('data: '.length));
    }
    if (data.length === 0) return;
    const received: ReceivedEvent = {
      event,
      ...(id === undefined ? {} : { id }),
      data: JSON.parse(data.join('\n')),
    };
    events.push(received);
    for (const w of waiting.filter((w) => w.match(received))) {
      waiting.splice(waiting.indexOf(w), 1);
      w.resolve(received);
    }
  };
  const request = get(url, { headers: { accept: 'text/event-stream', ...headers } });
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    request.on('response', (res) => {
      resolve(res);
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
          dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      });
      res.on('end', () => endStream());
      res.on('error', (e) => failStream(e));
    });
    request.on('error', (e) => {
      reject(e);
      failStream(e);
    });
  });
  return {
    response,
    events,
    comments,
    ended,
    next(match) {
      const seen = events.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        waiting.push({ match, resolve });
        ended.then(() => reject(new Error('the event stream ended before the event came')), reject);
      });
    },
    close: () => request.destroy(),
  };
}
