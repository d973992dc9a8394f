/**
 * `train({ dashboard })`, the API's way to the dashboard: off unless asked, served for the run
 * when asked (its URL in `started`, reachable while it trains, closed at the end), and refused
 * with the same rules as `--dashboard`. One tiny in-process run (an MLP on 256 images).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TrainEvent } from '../src/reporter.js';
import { train } from '../src/train.js';
import { type EventReader, readEvents } from './serverSentEvents.js';

let out: string;
beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), 'shardline-train-dashboard-'));
});
afterAll(async () => {
  await rm(out, { recursive: true, force: true });
});

const tiny = {
  inProcess: true,
  model: 'mlp',
  epochs: 1,
  limitTrain: 256,
  limitTest: 50,
  backend: 'wasm',
} as const;

describe('train({ dashboard })', () => {
  it('serves the run while it trains, with its URL in `started`, and closes at the end', async () => {
    let url: string | undefined;
    let stream: EventReader | undefined;
    await train({
      ...tiny,
      out: join(out, 'on'),
      dashboard: '127.0.0.1:0',
      onEvent: (event: TrainEvent) => {
        if (event.event !== 'started') return;
        url = String(event.dashboard);
        // Opened while the run trains: the server answers between its steps.
        stream = readEvents(`${url}api/events`);
      },
    });
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    await stream!.ended;
    const snapshot = stream!.events[0]!;
    expect(snapshot.event).toBe('snapshot');
    expect(snapshot.data).toMatchObject({ job: { mode: 'in-process', model: 'mlp' } });
    const kinds = stream!.events.map((e) => e.event);
    expect(kinds).toContain('epoch_end');
    expect(stream!.events.filter((e) => e.event === 'state').at(-1)?.data.state).toBe('done');
    await expect(fetch(`${url}healthz`)).rejects.toThrow();
  });

  it('is off unless asked: no `dashboard` in `started`', async () => {
    const events: TrainEvent[] = [];
    await train({ ...tiny, out: join(out, 'off'), onEvent: (e) => events.push(e) });
    expect(events[0]).toMatchObject({ event: 'started' });
    expect(events[0]).not.toHaveProperty('dashboard');
  });

  it('refuses what --dashboard refuses, before anything starts', async () => {
    await expect(train({ ...tiny, out: join(out, 'bad'), dashboard: 'nope' })).rejects.toThrow(
      /dashboard: "nope" is not valid: expected off, or host:port/,
    );
    await expect(
      train({ ...tiny, out: join(out, 'exposed'), dashboard: '0.0.0.0:0' }),
    ).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringMatching(
        /Refusing to serve the dashboard on 0\.0\.0\.0:0 without a token/,
      ),
    });
  });
});
